import subprocess
import sys

import bpmf


def test_every_public_name_resolves():
    for name in bpmf.__all__:
        assert getattr(bpmf, name) is not None, name
    assert bpmf.BPMF.__module__ == "bpmf.models.bpmf"
    assert callable(bpmf.compare)


def test_import_does_not_load_pymc():
    code = "import sys, bpmf; print('pymc' in sys.modules, 'scipy.stats' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_config_context_restores_progressbar():
    before = bpmf.get_config()["progressbar"]
    with bpmf.config_context(progressbar=not before):
        assert bpmf.get_config()["progressbar"] is (not before)
    assert bpmf.get_config()["progressbar"] is before
