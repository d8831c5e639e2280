#!/usr/bin/env python3
"""Prepare the King James Bible corpus used by tools/train/train_demo.py and
tools/fixtures/make_fixtures.py.

Source: Debian package `bible-kjv-text` (the public-domain Authorized King James
Version, /usr/lib/bible.data), read with the `bible` program from package
`bible-kjv`:

    apt-get install bible-kjv          # pulls in bible-kjv-text
    python3 tools/train/prepare_corpus.py

`bible -f -m 8192 gen1:1-rev22:21` prints one verse per line as
"<Abbrev><chapter>:<verse> <text>" (31102 verses, plain ASCII). This script turns
that into one document per chapter:

    "<Book name> <chapter>\n1 <verse 1 text>\n2 <verse 2 text>\n...\n"

(runs of spaces inside a verse are collapsed to one space; the text is otherwise
untouched) and splits the chapters by whole books:

  test  (held out, reported):   Ruth, Esther, Jonah, Titus, Philemon, Jude
  valid (model selection only): Joel, Nahum, Haggai, 2 Thessalonians, 2 John, 3 John
  train: the other 54 books

Outputs (deterministic; sha256 printed):
  tools/train/data/chapters.jsonl   one JSON object per chapter:
      {"book_index", "book", "chapter", "split", "text"}   (not committed; ~4.6 MB)
  models/eval/heldout.txt           concatenation of the test chapters' texts, in
                                    Bible order (committed; the evaluation text)
"""
import hashlib
import json
import os
import re
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))

BOOKS = [
    "Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy", "Joshua", "Judges",
    "Ruth", "1 Samuel", "2 Samuel", "1 Kings", "2 Kings", "1 Chronicles",
    "2 Chronicles", "Ezra", "Nehemiah", "Esther", "Job", "Psalms", "Proverbs",
    "Ecclesiastes", "Song of Solomon", "Isaiah", "Jeremiah", "Lamentations",
    "Ezekiel", "Daniel", "Hosea", "Joel", "Amos", "Obadiah", "Jonah", "Micah",
    "Nahum", "Habakkuk", "Zephaniah", "Haggai", "Zechariah", "Malachi",
    "Matthew", "Mark", "Luke", "John", "Acts", "Romans", "1 Corinthians",
    "2 Corinthians", "Galatians", "Ephesians", "Philippians", "Colossians",
    "1 Thessalonians", "2 Thessalonians", "1 Timothy", "2 Timothy", "Titus",
    "Philemon", "Hebrews", "James", "1 Peter", "2 Peter", "1 John", "2 John",
    "3 John", "Jude", "Revelation",
]
TEST_BOOKS = ["Ruth", "Esther", "Jonah", "Titus", "Philemon", "Jude"]
VALID_BOOKS = ["Joel", "Nahum", "Haggai", "2 Thessalonians", "2 John", "3 John"]

LINE_RE = re.compile(r"^(\S+?)(\d+):(\d+) (.*)$")


def read_verses():
    out = subprocess.run(["bible", "-f", "-m", "8192", "gen1:1-rev22:21"],
                         check=True, capture_output=True, cwd="/").stdout
    text = out.decode("ascii")  # the KJV text there is pure ASCII; fail loudly if not
    verses = []  # (book_index, chapter, verse, text)
    abbrevs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        m = LINE_RE.match(line)
        if not m:
            raise SystemExit(f"unexpected line: {line!r}")
        ab, ch, vs, body = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
        if not abbrevs or abbrevs[-1] != ab:
            abbrevs.append(ab)
        body = re.sub(r" {2,}", " ", body.strip())
        verses.append((len(abbrevs) - 1, ch, vs, body))
    if len(abbrevs) != 66 or len(verses) != 31102:
        raise SystemExit(f"expected 66 books / 31102 verses, got {len(abbrevs)} / {len(verses)}")
    return verses


def main():
    verses = read_verses()
    chapters = []
    for bi, ch, vs, body in verses:
        if not chapters or chapters[-1]["book_index"] != bi + 1 or chapters[-1]["chapter"] != ch:
            book = BOOKS[bi]
            split = "test" if book in TEST_BOOKS else "valid" if book in VALID_BOOKS else "train"
            chapters.append({"book_index": bi + 1, "book": book, "chapter": ch, "split": split,
                             "lines": [f"{book} {ch}"]})
        chapters[-1]["lines"].append(f"{vs} {body}")
    for c in chapters:
        c["text"] = "\n".join(c.pop("lines")) + "\n"

    data_dir = os.path.join(ROOT, "tools", "train", "data")
    os.makedirs(data_dir, exist_ok=True)
    os.makedirs(os.path.join(ROOT, "models", "eval"), exist_ok=True)
    jpath = os.path.join(data_dir, "chapters.jsonl")
    with open(jpath, "w", encoding="utf-8", newline="\n") as f:
        for c in chapters:
            f.write(json.dumps(c, ensure_ascii=False) + "\n")
    hpath = os.path.join(ROOT, "models", "eval", "heldout.txt")
    with open(hpath, "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(c["text"] for c in chapters if c["split"] == "test"))

    for p in (jpath, hpath):
        h = hashlib.sha256(open(p, "rb").read()).hexdigest()
        print(f"{os.path.relpath(p, ROOT)}: {os.path.getsize(p)} bytes sha256 {h}")
    for s in ("train", "valid", "test"):
        cs = [c for c in chapters if c["split"] == s]
        print(f"{s}: {len(cs)} chapters, {sum(len(c['text']) for c in cs)} chars, "
              f"{sum(len(c['text'].split()) for c in cs)} whitespace words")
    return 0


if __name__ == "__main__":
    sys.exit(main())
