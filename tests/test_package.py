"""The package surface: every public name resolves, the CLI answers without importing heavy libraries."""

import subprocess
import sys

import mlplab


def test_every_public_name_resolves():
    for name in mlplab.__all__:
        assert getattr(mlplab, name) is not None, name


def test_help_does_not_import_torch_sklearn_or_bokeh():
    code = ("import sys\nfrom mlplab.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'sklearn', 'bokeh', 'matplotlib', 'openTSNE') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out
    assert "train" in out and "embed" in out and "report" in out


def test_python_m_mlplab_and_unknown_command():
    proc = subprocess.run([sys.executable, "-m", "mlplab", "frobnicate"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("mlplab: error: ") and proc.stderr.count("\n") == 1
    assert "datasets, train, evaluate" in proc.stderr


def test_bad_flag_value_is_one_line():
    proc = subprocess.run([sys.executable, "-m", "mlplab", "train", "--epochs", "many"], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
    assert "many" in proc.stderr
