from __future__ import annotations

import pytest

from stainless.core.storage import InvalidKeyError, validate_key, validate_prefix


@pytest.mark.parametrize("key", ["a", "raw/slide-1/field_000_dic.tif", "x=1/y+2/z.png"])
def test_valid_keys_pass(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("a/../b", "'..'"),
        ("..", "'..'"),
        ("a/./b", "'.'"),
        ("a//b", "empty segment"),
        ("a/b/", "empty segment"),
        ("a\\b", "characters"),
        ("a/.hidden", "hidden"),
        ("a b", "characters"),
        ("x" * 513, "longer"),
    ],
)
def test_invalid_keys_are_refused_with_a_reason(key: str, reason: str) -> None:
    with pytest.raises(InvalidKeyError, match=reason):
        validate_key(key)


def test_prefix_may_be_empty_or_end_in_a_slash() -> None:
    assert validate_prefix("") == ""
    assert validate_prefix("raw/") == "raw/"
    with pytest.raises(InvalidKeyError):
        validate_prefix("../")
