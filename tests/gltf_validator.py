"""Run the Khronos glTF validator (npm package ``gltf-validator``) on GLB bytes.

The validator is the reference for what viewers and engines will accept, so the tests
use it rather than our own reading of the spec. It is installed once with npm into
``.cache/node`` under the repository root (git ignores ``.cache/``). Node.js and npm are
test requirements: without them the calling test fails with a message saying what to
install; it never skips, so CI cannot pass without validating.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
PREFIX = REPO / ".cache" / "node"
PACKAGE = PREFIX / "node_modules" / "gltf-validator"
INSTALL_TIMEOUT_S = 300
RUN_TIMEOUT_S = 120

# Reads the GLB from a file named on the command line, prints the report as JSON.
SCRIPT = """
const fs = require('fs');
const validator = require('gltf-validator');
const data = new Uint8Array(fs.readFileSync(process.argv[process.argv.length - 1]));
validator.validateBytes(data, {maxIssues: 200})
  .then((report) => { process.stdout.write(JSON.stringify(report)); })
  .catch((err) => { process.stderr.write(String(err)); process.exit(3); });
"""


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(
            f"`{tool}` not found: the glTF tests need Node.js 18+ and npm to run the Khronos"
            " validator (e.g. `apt-get install nodejs npm`)",
            pytrace=False,
        )
    return path


def ensure_installed() -> Path:
    """The validator's package folder, installed on first use; fails the test if it cannot."""
    if (PACKAGE / "package.json").exists():
        return PACKAGE
    npm = _require("npm")
    PREFIX.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            [npm, "install", "--prefix", str(PREFIX), "--no-audit", "--no-fund", "gltf-validator"],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`npm install gltf-validator` took over {INSTALL_TIMEOUT_S} s", pytrace=False)
    if done.returncode != 0 or not (PACKAGE / "package.json").exists():
        pytest.fail(
            f"`npm install --prefix {PREFIX} gltf-validator` failed:\n{done.stderr[-2000:]}",
            pytrace=False,
        )
    return PACKAGE


def validate_glb(data: bytes) -> dict[str, Any]:
    """The validator's report for one GLB: ``report["issues"]["numErrors"]``, ``messages``..."""
    node = _require("node")
    ensure_installed()
    with tempfile.TemporaryDirectory() as tmp:
        glb = Path(tmp) / "model.glb"
        glb.write_bytes(data)
        env = dict(os.environ, NODE_PATH=str(PREFIX / "node_modules"))
        done = subprocess.run(
            [node, "-e", SCRIPT, str(glb)],
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
            env=env,
        )
    if done.returncode != 0:
        pytest.fail(f"gltf-validator did not run: {done.stderr[-2000:]}", pytrace=False)
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def errors(report: dict[str, Any]) -> list[str]:
    """Error messages (severity 0) as readable lines, for assertion messages."""
    return [
        f"{m.get('code')}: {m.get('message')} at {m.get('pointer', '')}"
        for m in report["issues"]["messages"]
        if m.get("severity") == 0
    ]
