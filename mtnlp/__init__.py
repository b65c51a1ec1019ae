"""mtnlp: multi-task NLP as a production system (TFX pipeline, shared Keras encoder, TF Serving)."""

__version__ = "0.1.0"
