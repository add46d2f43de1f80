"""Reading prompt files: the PartiPrompts TSV, plain text (one prompt per line) and CSV.

Reading is all-or-nothing: every row is checked first, and any broken row makes `read_prompt_file`
raise PromptFileError listing each problem with its line number, so that nothing is imported.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

WRITING_CATEGORY = "Writing & Symbols"
_DOUBLE_QUOTED = re.compile(r"\"([^\"]+)\"|“([^”]+)”")
_SINGLE_QUOTED = re.compile(r"(?<![\w'])'([^']+)'(?![\w])")
_TRUE = {"1", "true", "yes", "y"}
_FALSE = {"0", "false", "no", "n", ""}


@dataclass(frozen=True)
class PromptRow:
    line: int
    text: str
    category: str = ""
    challenge: str = ""
    note: str = ""
    needs_text: bool = False
    rendered_text: str = ""
    needs_text_override: bool | None = None


class PromptFileError(ValueError):
    def __init__(self, path: str, errors: list[tuple[int, str]]):
        self.path = path
        self.errors = errors
        lines = "\n".join(f"  line {line}: {message}" for line, message in errors)
        super().__init__(f"{path}: {len(errors)} broken row(s); nothing was imported.\n{lines}")


def quoted_text(prompt: str) -> list[str]:
    """Strings in double quotes (straight or curly) or in single quotes that are not apostrophes."""
    found = [a or b for a, b in _DOUBLE_QUOTED.findall(prompt)]
    found += _SINGLE_QUOTED.findall(prompt)
    return [text.strip() for text in found if text.strip()]


def detect_rendered_text(prompt: str, category: str = "", challenge: str = "") -> tuple[bool, str]:
    """Does the prompt ask for text in the image, and which text? (quoted strings, "Writing & Symbols")"""
    texts = quoted_text(prompt)
    needs = bool(texts) or WRITING_CATEGORY in (category, challenge)
    return needs, " / ".join(texts)


def _row(
    line: int, text: str, category="", challenge="", note="", override: bool | None = None, rendered: str = ""
) -> PromptRow:
    needs, detected = detect_rendered_text(text, category, challenge)
    return PromptRow(
        line=line,
        text=text,
        category=category,
        challenge=challenge,
        note=note,
        needs_text=needs,
        rendered_text=rendered or detected,
        needs_text_override=override,
    )


def _parse_bool(value: str) -> bool | None:
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return None if low == "" else False
    raise ValueError(f"{value!r} is not yes/no")


def _read_tsv(content: str) -> tuple[list[PromptRow], list[tuple[int, str]]]:
    lines = content.splitlines()
    if not lines:
        return [], [(1, "the file is empty")]
    header = [h.strip() for h in lines[0].split("\t")]
    lowered = [h.lower() for h in header]
    if "prompt" not in lowered:
        return [], [(1, f"header has no 'Prompt' column (found {header})")]
    col = {name: lowered.index(name) for name in ("prompt", "category", "challenge", "note") if name in lowered}
    rows, errors = [], []
    for number, raw in enumerate(lines[1:], start=2):
        if not raw.strip():
            continue
        fields = raw.split("\t")
        if len(fields) != len(header):
            errors.append((number, f"expected {len(header)} tab-separated fields, found {len(fields)}"))
            continue
        text = fields[col["prompt"]].strip()
        if not text:
            errors.append((number, "empty prompt"))
            continue
        extra = {name: fields[col[name]].strip() if name in col else "" for name in ("category", "challenge", "note")}
        rows.append(_row(number, text, extra["category"], extra["challenge"], extra["note"]))
    return rows, errors


def _read_csv(content: str) -> tuple[list[PromptRow], list[tuple[int, str]]]:
    reader = csv.reader(io.StringIO(content), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return [], [(1, "the file is empty")]
    except csv.Error as exc:
        return [], [(1, f"cannot parse the header: {exc}")]
    lowered = [h.strip().lower() for h in header]
    if "prompt" not in lowered:
        return [], [(1, f"header has no 'prompt' column (found {header})")]
    rows, errors = [], []
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            errors.append((reader.line_num, f"malformed CSV: {exc}"))
            break
        number = reader.line_num
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            errors.append((number, f"expected {len(header)} fields, found {len(fields)}"))
            continue
        record = {name: value.strip() for name, value in zip(lowered, fields, strict=True)}
        if not record["prompt"]:
            errors.append((number, "empty prompt"))
            continue
        try:
            override = _parse_bool(record.get("needs_text", ""))
        except ValueError as exc:
            errors.append((number, f"needs_text: {exc}"))
            continue
        rows.append(
            _row(
                number,
                record["prompt"],
                record.get("category", ""),
                record.get("challenge", ""),
                record.get("note", ""),
                override,
                record.get("rendered_text", ""),
            )
        )
    return rows, errors


def _read_txt(content: str) -> tuple[list[PromptRow], list[tuple[int, str]]]:
    rows, errors = [], []
    for number, raw in enumerate(content.splitlines(), start=1):
        text = raw.strip()
        if not text:
            continue
        if "\t" in text:
            errors.append((number, "tab character in a plain-text prompt (is this a TSV file?)"))
            continue
        rows.append(_row(number, text))
    return rows, errors


READERS = {".tsv": _read_tsv, ".txt": _read_txt, ".csv": _read_csv}


def read_prompt_file(path: str | Path) -> list[PromptRow]:
    """Parse a prompt file by its extension; raise PromptFileError if any row is broken."""
    path = Path(path)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise PromptFileError(str(path), [(0, f"unknown file type {path.suffix!r}; use .tsv, .txt or .csv")])
    try:
        content = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise PromptFileError(str(path), [(0, "file not found")]) from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise PromptFileError(str(path), [(line, "not valid UTF-8")]) from None
    rows, errors = reader(content)
    if not errors and not rows:
        errors = [(1, "no prompts in the file")]
    if errors:
        raise PromptFileError(str(path), errors)
    return rows
