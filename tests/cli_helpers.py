"""Shared helpers of the CLI tests: run ``sdedit`` in-process and check its one-line errors."""

from sdedit_engine.cli import main


def run(args, capsys):
    """Run the CLI with ``args``; return (exit code, stdout, stderr)."""
    try:
        rc = main([str(a) for a in args])
    except SystemExit as e:  # argparse usage errors
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str) -> str:
    """The single ``sdedit: error: …`` line of a failed run (no traceback, nothing else)."""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("sdedit: error: ") and "Traceback" not in err
    return lines[0]
