"""Helpers shared by all test suites."""

from pathlib import Path

# Recorded provider responses. The repository sits beside the shared/ folder,
# both on a developer's machine and in CI.
FIXTURES_DIR = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
