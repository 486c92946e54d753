"""The configuration reference (docs/configuration.md) and the shipped configs match the code."""

import dataclasses
import os
import re

from dmi_tf import config as config_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def dotted_fields(cls, prefix=""):
    for field in dataclasses.fields(cls):
        default = (field.default_factory() if field.default_factory is not dataclasses.MISSING
                   else field.default)
        if dataclasses.is_dataclass(default):
            yield from dotted_fields(type(default), prefix + field.name + ".")
        else:
            yield prefix + field.name, default


def reference_rows():
    readme = open(os.path.join(REPO, "docs", "configuration.md"), encoding="utf-8").read()
    return dict(re.findall(r"^\| `([a-z_.]+)` \| `([^`]*)` \|", readme, re.M))


def test_every_config_key_is_documented_with_its_default():
    rows = reference_rows()
    for key, default in dotted_fields(config_lib.Config):
        assert key in rows, f"docs/configuration.md lacks {key}"
        shown = ("null" if default is None else str(default).lower() if isinstance(default, bool)
                 else str(default))
        assert rows[key] == shown, (f"docs/configuration.md says {key} defaults to {rows[key]}, "
                                    f"code says {shown}")


def test_reference_documents_no_removed_key():
    keys = {key for key, _ in dotted_fields(config_lib.Config)}
    assert set(reference_rows()) <= keys
