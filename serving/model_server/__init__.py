"""A TensorFlow-Serving-compatible model server for local use and tests (`mtnlp-model-server`).

Same flags, config files, directory layout, gRPC and REST protocol as `tensorflow_model_server`, so that
clients, configs and tests written against one work against the other.
"""
