"""clients/js as the npm package `streamer-client`: `npm pack` holds exactly the intended
files, the tarball installs into a fresh project (offline: the package has no
dependencies), its manifest's entry points resolve for Node and for TypeScript, a typed
example compiles with `tsc --strict`, and wrong uses of the typed API do not."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from functools import reduce
from operator import getitem
from pathlib import Path
from typing import Any

import pytest

from bench.stack import Stack
from tests.support.packages import ROOT, documented_protocol_version, run

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

PACKAGE = ROOT / "clients" / "js"
TSC = PACKAGE / "node_modules" / ".bin" / "tsc"  # typescript, a pinned devDependency
INTENDED_FILES = {"package.json", "README.md", "src/streamer-client.js", "src/streamer-client.d.ts"}
# What a user's strict TypeScript project on Node's module resolution looks like.
TSC_OPTIONS = [
    "--strict",
    "--noEmit",
    "--module",
    "nodenext",
    "--moduleResolution",
    "nodenext",
    "--target",
    "es2022",
    "--lib",
    "es2022,dom",
]
WRONG_USE_HEADER = """\
import { PROTOCOL_VERSION, StreamerClient, StreamerError } from "streamer-client";
declare const client: StreamerClient;
"""


@dataclass(frozen=True)
class Packed:
    """The tarball's file list, and a fresh npm project that installed the tarball."""

    files: frozenset[str]
    project: Path

    @property
    def installed(self) -> Path:
        return self.project / "node_modules" / "streamer-client"

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads((self.installed / "package.json").read_text(encoding="utf-8"))

    def compile(self, name: str, source: str) -> tuple[int, list[str]]:
        """``tsc --strict`` on one file of the project: exit code and diagnostic lines."""
        (self.project / name).write_text(source, encoding="utf-8")
        result = run([str(TSC), *TSC_OPTIONS, name], self.project, check=False)
        lines = [line for line in result.stdout.splitlines() if ": error TS" in line]
        return result.returncode, lines


@pytest.fixture(scope="module")
def packed(tmp_path_factory: pytest.TempPathFactory) -> Packed:
    assert TSC.exists(), "clients/js/node_modules is missing: run scripts/bootstrap"
    out = tmp_path_factory.mktemp("npm-pack")
    pack = run(["npm", "pack", "--json", "--pack-destination", str(out)], PACKAGE)
    (info,) = json.loads(pack.stdout)
    project = out / "project"
    project.mkdir()
    (project / "package.json").write_text(
        json.dumps({"name": "uses-streamer-client", "private": True, "type": "module"})
    )
    install = ["npm", "install", "--offline", "--no-audit", "--no-fund", "--loglevel=error"]
    run([*install, str(out / info["filename"])], project)
    return Packed(frozenset(f["path"] for f in info["files"]), project)


def test_the_tarball_holds_exactly_the_package_files(packed: Packed) -> None:
    assert packed.files == INTENDED_FILES


def test_the_manifest_describes_an_esm_package_of_the_documented_protocol(packed: Packed) -> None:
    manifest = packed.manifest
    assert (manifest["name"], manifest["type"]) == ("streamer-client", "module")
    assert manifest["streamer"]["protocolVersion"] == documented_protocol_version()
    assert manifest["license"] and manifest["version"]
    assert not manifest.get("dependencies")


@pytest.mark.parametrize(
    "entry",
    [
        ("exports", ".", "types"),
        ("exports", ".", "default"),
        ("exports", "./package.json"),
        ("types",),
    ],
    ids=lambda entry: "/".join(entry),
)
def test_every_entry_point_of_the_manifest_is_in_the_package(
    packed: Packed, entry: tuple[str, ...]
) -> None:
    target = reduce(getitem, entry, packed.manifest)
    assert (packed.installed / target).is_file(), target


def test_node_imports_the_package_by_its_name(packed: Packed) -> None:
    script = (
        "const m = await import('streamer-client');"
        "console.log(JSON.stringify({version: m.PROTOCOL_VERSION, names: Object.keys(m),"
        " isDefault: m.default === m.StreamerClient}));"
    )
    result = run(["node", "--input-type=module", "-e", script], packed.project)
    seen = json.loads(result.stdout)
    assert seen["version"] == packed.manifest["streamer"]["protocolVersion"]
    assert {"StreamerClient", "StreamerError", "PROTOCOL_VERSION"} <= set(seen["names"])
    assert seen["isDefault"] is True


def test_node_refuses_a_path_the_package_does_not_export(packed: Packed) -> None:
    script = "await import('streamer-client/src/streamer-client.js');"
    result = run(["node", "--input-type=module", "-e", script], packed.project, check=False)
    assert result.returncode != 0
    assert "ERR_PACKAGE_PATH_NOT_EXPORTED" in result.stderr


def test_the_typed_example_compiles_with_strict_typescript(packed: Packed) -> None:
    example = (PACKAGE / "examples" / "report.ts").read_text(encoding="utf-8")
    assert packed.compile("report.ts", example) == (0, [])


@pytest.mark.parametrize(
    "snippet, code",
    [
        pytest.param(
            'client.request("generate_report", {}, { onOutput: (chunk: number) => chunk });',
            "TS2769",
            id="output-chunk-is-not-a-number",
        ),
        pytest.param(
            'client.request("generate_report", {}, { onProgress: (p) => p.percent });',
            "TS2339",
            id="progress-has-no-such-field",
        ),
        pytest.param(
            'client.request("generate_report", {}, { onChunk: () => {} });',
            "TS2769",
            id="request-has-no-such-option",
        ),
        pytest.param(
            'client.resume("r-1", { afterSeq: "7" });', "TS2322", id="after-seq-is-a-number"
        ),
        pytest.param(
            'client.addEventListener("state", (event) => event.detail.code);',
            "TS2339",
            id="state-event-carries-a-state-name",
        ),
        pytest.param(
            'const code: number = new StreamerError("TIMEOUT", "late").code;',
            "TS2322",
            id="error-codes-are-strings",
        ),
        pytest.param(
            'const echoed: string = (await client.request("echo", {})).echo;',
            "TS2322",
            id="echo-answers-an-object",
        ),
        pytest.param(
            'const version: "1.0" = PROTOCOL_VERSION;', "TS2322", id="protocol-version-is-1.1"
        ),
        pytest.param(
            'import { StreamerClient as Deep } from "streamer-client/src/streamer-client.js";',
            "TS2307",
            id="path-outside-exports",
        ),
    ],
)
def test_a_wrong_use_of_the_typed_api_does_not_compile(
    packed: Packed, snippet: str, code: str, request: pytest.FixtureRequest
) -> None:
    name = "wrong_" + re.sub(r"\W", "_", request.node.callspec.id) + ".ts"
    returncode, errors = packed.compile(name, WRONG_USE_HEADER + snippet + "\n")
    assert returncode != 0
    # The error is the expected one, on the snippet's line, and the package itself is clean.
    assert len(errors) == 1 and errors[0].startswith(f"{name}(3,") and f"error {code}:" in errors[0]


@pytest.mark.e2e
def test_the_installed_package_talks_to_a_live_server(packed: Packed, live_stack: Stack) -> None:
    script = """
import { StreamerClient } from "streamer-client";
const [url, token] = process.argv.slice(1);
const client = new StreamerClient(url, { token });
await client.connect();
const seqs = [];
const echo = await client.request("echo", { from: "npm" });
const report = await client.request("generate_report", { duration_s: 0, steps: 1 }, {
  onOutput: (chunk, seq) => seqs.push(seq),
});
client.close();
console.log(JSON.stringify({ echo, seqs, steps: report.steps }));
"""
    # Node 20 has a WebSocket class behind this flag (Node >= 22: always).
    node = [shutil.which("node") or "node", "--experimental-websocket", "--input-type=module"]
    token = live_stack.issue_token("npm-user")
    result = run([*node, "-e", script, live_stack.ws_url, token], packed.project)
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["echo"] == {"echo": {"from": "npm"}}
    assert seen["steps"] == 1
    assert seen["seqs"] and seen["seqs"] == list(range(1, len(seen["seqs"]) + 1))
