"""The public surface is small and pinned: a change to it is a deliberate one."""

import subprocess
import sys

import gradkit


def test_exported_members():
    assert gradkit.__all__ == ["__version__", "check", "assert_close", "Check", "Comparison",
                               "Diagnosis", "Report", "Tolerance", "Options", "Assignment",
                               "AssignmentError", "load_assignment"]
    for name in gradkit.__all__:
        assert getattr(gradkit, name) is not None


def test_importing_gradkit_does_not_import_torch():
    code = "import sys, gradkit, gradkit.cli; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_explain_knows_diagnosis_and_policy_codes(gradkit_cli):
    for code in ("GK101", "GKP103", "gkp201"):
        result = gradkit_cli("explain", code)
        assert result.exit_code == 0 and len(result.stdout) > 100, code
    unknown = gradkit_cli("explain", "GK999")
    assert unknown.exit_code == 2 and "GKP201" in unknown.stderr
