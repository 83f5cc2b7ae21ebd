"""The serving base image's build instructions pin what Lambda runs: one linux/amd64 image manifest.

Without ``--platform`` an arm64 laptop builds an arm64 image (Lambda x86_64: exec format error);
without ``--provenance=false`` buildx pushes an image index with an attestation (which the
release refuses, and Lambda does not take).
"""

from __future__ import annotations

import re

import pytest

from tests.support.paths import REPO

pytestmark = pytest.mark.unit

DOCS = (
    "README.md", "serving/Dockerfile", "docs/deploy-aws.md", "docs/devstack.md",
    "docs/interfaces.md", "docs/kubernetes.md", "docs/architecture.md",
)  # fmt: skip
BUILD = re.compile(r"\bdocker (?:buildx )?build\b")


def build_commands(text: str) -> list[str]:
    """Each `docker [buildx] build` command in ``text``, its backslash-continued lines joined, comment marks dropped."""
    lines = [line.strip().lstrip("#").strip() for line in text.splitlines()]
    commands = []
    for i, line in enumerate(lines):
        if not BUILD.search(line):
            continue
        command = line
        while command.endswith("\\") and i + 1 < len(lines):
            i += 1
            command = command[:-1] + " " + lines[i]
        commands.append(command[BUILD.search(command).start() :])  # type: ignore[union-attr]
    return commands


def test_every_documented_build_pins_the_platform_and_turns_provenance_off():
    found = {doc: build_commands((REPO / doc).read_text()) for doc in DOCS}
    # The README's brief deploy, the full walkthrough (docs/deploy-aws.md) and the compose notes (docs/devstack.md).
    assert found["README.md"] and found["docs/deploy-aws.md"] and found["docs/devstack.md"], found
    assert found["serving/Dockerfile"], found
    for doc, commands in found.items():
        for command in commands:
            if "serving/Dockerfile" in command or doc == "serving/Dockerfile":
                assert "--platform linux/amd64" in command and "--provenance=false" in command, (doc, command)


def test_build_commands_are_found_across_continued_comment_lines():
    text = (
        "#   docker buildx build --platform linux/amd64 --provenance=false \\\n#       -f serving/Dockerfile -t x .\n"
    )
    assert build_commands(text) == [
        "docker buildx build --platform linux/amd64 --provenance=false  -f serving/Dockerfile -t x ."
    ]
