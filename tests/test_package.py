"""The top-level package: version and the timm-style registry shortcuts."""

import subprocess
import sys

import emofusion


def test_top_level_registry_shortcuts():
    from emofusion.models import list_models
    from emofusion.tasks import emotion_intensity_task

    assert emofusion.list_models() == list_models()
    assert "rrnn" in emofusion.list_models() and "synthetic" in emofusion.list_datasets()
    model = emofusion.create_model("rrnn", {"text": 8, "audio": 4}, emotion_intensity_task(), encoder_dim=4)
    assert sorted(model.modalities) == ["audio", "text"]
    assert emofusion.__version__ != ""


def test_unknown_attribute_is_an_attribute_error():
    try:
        emofusion.no_such_thing  # noqa: B018
    except AttributeError as e:
        assert "no_such_thing" in str(e)
    else:
        raise AssertionError("expected AttributeError")


def test_import_does_not_load_torch():
    code = "import sys, emofusion; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
