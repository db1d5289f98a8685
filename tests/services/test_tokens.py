"""Tokens are passed to commands as arguments, so none may read as an option."""
from portal.services.crypto import new_token


def test_no_token_starts_with_a_dash_and_each_is_new():
    # token_urlsafe starts with "-" one time in 64: 4,000 draws would show it about 60 times.
    tokens = [new_token() for _ in range(4000)]
    assert not [t for t in tokens if t.startswith("-")]
    assert len(set(tokens)) == len(tokens)
    assert all(len(t) == 43 for t in tokens)
