"""API keys: format, hashing, the per-request lookup and the key config (no I/O)."""

from datetime import UTC, datetime

import pytest

from iogate.config import parse_config
from iogate.errors import ConfigError
from iogate.policies import FakeClock
from iogate.server.keys import KEY_PREFIX, KeyRefusal, KeyStore, hash_key, new_key

NOW = datetime(2026, 6, 1, tzinfo=UTC).timestamp()


def _store(clock: FakeClock | None = None, **keys: dict[str, object]) -> KeyStore:
    cfg = parse_config({"keys": keys}, environ={})
    return KeyStore(cfg.keys, clock=clock or FakeClock(), wall=lambda: NOW)


def test_new_keys_have_the_prefix_and_256_random_bits() -> None:
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    for key in keys:
        assert key.startswith(KEY_PREFIX)
        assert len(key) == len(KEY_PREFIX) + 43  # token_urlsafe(32): 32 bytes, base64url
    key = next(iter(keys))
    assert len(hash_key(key)) == 64
    assert hash_key(key) == hash_key(key)
    assert hash_key(key) != hash_key(key + "x")


def test_authenticate_refuses_missing_malformed_unknown_expired_revoked() -> None:
    good, old, gone = new_key(), new_key(), new_key()
    store = _store(
        good={"sha256": hash_key(good).upper(), "scopes": ["db:main:read"]},
        old={"sha256": hash_key(old), "expires": datetime(2026, 1, 1, tzinfo=UTC)},
        gone={"sha256": hash_key(gone), "revoked": True},
    )
    assert store.authenticate(None) is KeyRefusal.MISSING
    assert store.authenticate(b"Basic dXNlcjpwYXNz") is KeyRefusal.MALFORMED
    assert store.authenticate(b"Bearer ") is KeyRefusal.MALFORMED
    assert store.authenticate(b"Bearer " + new_key().encode()) is KeyRefusal.UNKNOWN
    assert store.authenticate(b"Bearer " + old.encode()) is KeyRefusal.EXPIRED
    assert store.authenticate(b"Bearer " + gone.encode()) is KeyRefusal.REVOKED
    entry = store.authenticate(b"bearer  " + good.encode())
    assert not isinstance(entry, KeyRefusal)
    assert entry.principal.name == "good"
    assert entry.principal.allows("db:main:read")
    assert not entry.principal.allows("db:main:write")
    for refusal in KeyRefusal:
        assert good not in refusal.detail


def test_policy_bundle_reaches_the_principal() -> None:
    key = new_key()
    store = _store(
        r={
            "sha256": hash_key(key),
            "scopes": ["admin"],
            "tables": ["users"],
            "max_rows": 10,
            "max_bytes": 1000,
        }
    )
    entry = store.authenticate(b"Bearer " + key.encode())
    assert not isinstance(entry, KeyRefusal)
    p = entry.principal
    assert (p.tables, p.max_rows, p.max_bytes) == (frozenset({"users"}), 10, 1000)
    assert p.allows("upstream:anything")  # admin grants every scope


def test_rate_limit_is_a_token_bucket_per_key() -> None:
    clock = FakeClock()
    a, b = new_key(), new_key()
    store = _store(
        clock,
        a={"sha256": hash_key(a), "rate_limit": 2.0, "burst": 2},
        b={"sha256": hash_key(b)},
    )
    ea = store.authenticate(b"Bearer " + a.encode())
    eb = store.authenticate(b"Bearer " + b.encode())
    assert not isinstance(ea, KeyRefusal)
    assert not isinstance(eb, KeyRefusal)
    assert store.throttle(ea) is None
    assert store.throttle(ea) is None
    assert store.throttle(ea) == pytest.approx(0.5)  # one token per 0.5 s
    assert all(store.throttle(eb) is None for _ in range(100))  # no limit configured
    clock.advance(0.5)
    assert store.throttle(ea) is None


@pytest.mark.parametrize(
    ("key", "where"),
    [
        ({"sha256": "abc"}, "keys.k.sha256"),
        ({"sha256": "0" * 64, "scopes": ["db:main:delete"]}, "keys.k.scopes"),
        ({"sha256": "0" * 64, "scopes": ["root"]}, "keys.k.scopes"),
        ({"sha256": "0" * 64, "expires": datetime(2027, 1, 1)}, "keys.k.expires"),
        ({"sha256": "0" * 64, "plaintext": "iog_x"}, "keys.k.plaintext"),
    ],
)
def test_bad_key_config_names_the_key(key: dict[str, object], where: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"keys": {"k": key}}, environ={})
    assert where in str(info.value)


def test_two_keys_with_one_digest_are_refused() -> None:
    digest = hash_key(new_key())
    cfg = parse_config({"keys": {"a": {"sha256": digest}, "b": {"sha256": digest}}}, environ={})
    with pytest.raises(ValueError, match="same sha256"):
        KeyStore(cfg.keys)


def test_limits_and_allowlists_config() -> None:
    cfg = parse_config(
        {
            "server": {"limits": {"max_body_bytes": 100, "max_sql_chars": 5}},
            "upstreams": {
                "u": {
                    "base_url": "http://127.0.0.1:1/api",
                    "allowed_methods": ["get"],
                    "allowed_paths": ["/v1/items"],
                }
            },
        },
        environ={},
    )
    assert cfg.server.limits.max_body_bytes == 100
    assert cfg.server.limits.max_params == 10_000
    assert cfg.upstreams["u"].allowed_methods == ["GET"]
    with pytest.raises(ConfigError, match="allowed_paths"):
        parse_config(
            {"upstreams": {"u": {"base_url": "http://h/", "allowed_paths": ["v1"]}}}, environ={}
        )
