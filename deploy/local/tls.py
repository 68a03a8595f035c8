"""Make a throw-away CA and a server certificate for 127.0.0.1 with ``openssl``.

For the tests of encrypted Kafka and HTTPS: nothing here is meant for production, where the
certificates come from the organisation's own CA. Standard library and the ``openssl`` binary
only, like the rest of deploy/local::

    certs = make_certificates(tmp / "tls", keystore_password="s3cret")
    certs.ca          # PEM: what clients trust (KAFKA_SSL_CA_LOCATION)
    certs.cert        # PEM server certificate, SAN IP:127.0.0.1 and DNS:localhost
    certs.key         # its PEM private key (KEEL_TLS_KEY), unencrypted
    certs.keystore    # PKCS12 of key + certificate + CA, for Kafka's ssl.keystore.location
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from deploy.local.errors import MissingTool, StartupError

DAYS = 2  # throw-away: long enough for any test run, short enough to be obviously temporary


@dataclass(frozen=True)
class Certificates:
    ca: Path
    cert: Path
    key: Path
    keystore: Path
    keystore_password: str


def make_certificates(
    directory: Path, keystore_password: str, cn: str = "127.0.0.1", days: int = DAYS
) -> Certificates:
    """A new CA, and a server certificate it signed for ``cn``, 127.0.0.1 and localhost,
    valid for ``days``."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise MissingTool("openssl not found: install the openssl package")
    d = Path(directory).absolute()
    d.mkdir(parents=True, exist_ok=True)
    ca_key, ca, key, csr, cert = (
        d / "ca.key", d / "ca.pem", d / "server.key", d / "server.csr", d / "server.pem",
    )  # fmt: skip
    extensions = d / "server.ext"
    extensions.write_text(
        f"subjectAltName=IP:127.0.0.1,DNS:localhost,{'IP' if cn[0].isdigit() else 'DNS'}:{cn}\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "basicConstraints=CA:FALSE\n"
    )
    keystore = d / "server.p12"
    steps = [
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key,
         "-out", ca, "-days", str(days), "-subj", "/CN=keel throw-away test CA",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        [openssl, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", f"/CN={cn}"],
        [openssl, "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", str(days), "-extfile", extensions],
        [openssl, "pkcs12", "-export", "-in", cert, "-inkey", key, "-certfile", ca,
         "-name", "server", "-out", keystore, "-passout", f"pass:{keystore_password}"],
    ]  # fmt: skip
    for step in steps:
        result = subprocess.run(
            [str(part) for part in step],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).decode(errors="replace").strip()
            raise StartupError(f"openssl {step[1]} failed:\n{output}")
    for secret in (ca_key, key, keystore):
        secret.chmod(0o600)
    return Certificates(ca, cert, key, keystore, keystore_password)
