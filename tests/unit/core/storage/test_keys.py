from __future__ import annotations

import pytest

from stainless.core.storage import InvalidKeyError, validate_key, validate_prefix
from stainless.core.storage.keys import crop_key, crop_size_of


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


def test_crop_keys_name_their_size() -> None:
    key = crop_key("cells/s/0001/002", "dic", 360)
    assert key == "cells/s/0001/002_dic_360.png" and crop_size_of(key) == 360
    assert crop_size_of(crop_key("c/x", "bf", 256)) == 256
    assert crop_size_of("cells/s/0001/002_dic.png") is None
    assert crop_size_of("stained/s/1.png") is None
