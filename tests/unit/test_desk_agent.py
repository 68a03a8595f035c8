"""Who a desk command is recorded under, with the tokens ``make run`` makes.

One model (docs/desk.md "Who is recorded"): a personal token (a tokens-file entry with a
person's name) names its holder, whatever the page sends; a shared role token (the
``KEEL_*_TOKEN`` of the environment or a tokens-file entry named like one, as ``make run``
writes them) says only the role, and the desk's typed agent name (``X-Keel-Agent``) is
recorded. ``make run``'s tokens must be shared ones, or the audit trail names a token.
"""

from __future__ import annotations

from pathlib import Path

from deploy.local.run import ensure_tokens, read_env
from streams.auth import AGENT, AuthConfig


def test_make_runs_tokens_are_shared_so_the_typed_agent_name_is_recorded(tmp_path: Path) -> None:
    env_file, hash_file = ensure_tokens(tmp_path)
    auth = AuthConfig.from_env({"KEEL_AUTH_TOKENS_FILE": str(hash_file)})
    tokens = read_env(env_file)

    agent_token = tokens["KEEL_AGENT_TOKEN"]
    assert auth.authorize(f"Bearer {agent_token}", AGENT) is None  # it is an agent token
    for token in tokens.values():
        assert auth.personal_name(token) is None  # shared: the desk's X-Keel-Agent is recorded


def test_a_personal_token_names_its_holder(tmp_path: Path) -> None:
    import hashlib

    secret = "p" * 40
    entries = tmp_path / "tokens.sha256"
    entries.write_text(f"sha256:{hashlib.sha256(secret.encode()).hexdigest()} agent rep-7\n")
    auth = AuthConfig.from_env({"KEEL_AUTH_TOKENS_FILE": str(entries)})

    assert auth.personal_name(secret) == "rep-7"
    assert auth.personal_name("q" * 40) is None  # unknown token: nobody
