"""gRPC over TLS: the server's --ssl_config_file (TF Serving's SSLConfig) and the client's tls=True."""

from __future__ import annotations

import datetime

import pytest
from google.protobuf import text_format

from mtnlp.serving.client import ServingClient, ServingClientError
from mtnlp.serving.model_server.protos import SSLConfig

from .conftest import LOCAL_ONLY

pytestmark = LOCAL_ONLY
x509 = pytest.importorskip("cryptography.x509")


def self_signed() -> tuple[bytes, bytes]:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


def test_grpc_tls(start_server, toy_dir, tmp_path):
    key, cert = self_signed()
    cfg = tmp_path / "ssl.config"
    cfg.write_text(text_format.MessageToString(SSLConfig(server_key=key.decode(), server_cert=cert.decode())))
    p = start_server(
        "--model_name=hpt", f"--model_base_path={toy_dir / 'half_plus_two'}", f"--ssl_config_file={cfg}", rest=False
    )
    override = [("grpc.ssl_target_name_override", "localhost")]
    with ServingClient(p.grpc, model_name="hpt", tls=True, root_certificates=cert, options=override) as c:
        assert c.predict({"x": [0.0]})["y"].tolist() == [3.0]
    with ServingClient(p.grpc, model_name="hpt", retries=0, timeout=5) as plain:
        with pytest.raises(ServingClientError) as e:
            plain.predict({"x": [0.0]})
        assert e.value.code == "UNAVAILABLE"
