"""The training text: Jane Austen's six novels, from Debian's `r-cran-janeaustenr` package.

The novels are Project Gutenberg texts (public domain); the package (MIT, Julia Silge) ships
them as R character vectors, one line of the printed text each. Any Debian machine can get
it with `apt-get download r-cran-janeaustenr` (no root, no R needed: we read its files
ourselves), so training needs nothing that is not in a package registry.

The text is made prose-shaped for a language model: the hard-wrapped lines of each paragraph
are joined with single spaces (runs of spaces collapsed), paragraphs separated by a blank
line. The held-out part is the last `heldout_fraction` of every novel's paragraphs (its
closing pages), so that train and held-out never share a paragraph and every novel is in both.
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from bitnet.training.rdata import read_lazyload

DEBIAN_PACKAGE = "r-cran-janeaustenr"
PACKAGE_DATA = "usr/lib/R/site-library/janeaustenr/data"
INSTALLED_DATA = Path("/") / PACKAGE_DATA
DATA_FILES = ("Rdata.rdx", "Rdata.rdb")
# In publication order; the package's variable names.
BOOKS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")
HELDOUT_FRACTION = 0.01
LICENCE = ("Jane Austen's novels: public domain (Project Gutenberg texts); as packaged by the R package "
           "janeaustenr (MIT licence, Julia Silge), Debian package r-cran-janeaustenr")  # fmt: skip


def extract_deb_data(deb: Path, dest: Path) -> Path:
    """Copy janeaustenr's data files out of a .deb (an `ar` archive holding data.tar.*) into dest."""
    blob = deb.read_bytes()
    if blob[:8] != b"!<arch>\n":
        raise ValueError(f"{deb} is not a Debian package (no ar header)")
    pos, members = 8, {}
    while pos + 60 <= len(blob):
        header = blob[pos : pos + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58].decode())
        members[name] = blob[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size & 1)  # members are 2-byte aligned
    data = next((v for k, v in members.items() if k.startswith("data.tar")), None)
    if data is None:
        raise ValueError(f"{deb} has no data.tar member")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:  # gz / xz / zst-less: tarfile detects
        for name in DATA_FILES:
            member = tar.extractfile(f"./{PACKAGE_DATA}/{name}")
            if member is None:
                raise ValueError(f"{deb} has no {PACKAGE_DATA}/{name}: not {DEBIAN_PACKAGE}?")
            (dest / name).write_bytes(member.read())
    return dest


def download_deb(dest: Path) -> Path:
    """`apt-get download r-cran-janeaustenr` into dest (works without root); the .deb's path."""
    if shutil.which("apt-get") is None:
        raise FileNotFoundError(f"apt-get not found: get the {DEBIAN_PACKAGE} .deb on a Debian machine and pass --deb")
    dest.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["apt-get", "download", DEBIAN_PACKAGE], cwd=dest, capture_output=True, text=True)
    debs = sorted(dest.glob(f"{DEBIAN_PACKAGE}_*.deb"))
    if done.returncode or not debs:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise OSError(f"apt-get download {DEBIAN_PACKAGE} failed: {detail[-1] if detail else 'no .deb'} "
                           "(run `apt-get update` first?)")  # fmt: skip
    return debs[-1]


def find_data(deb: Path | None = None, cache_dir: Path | None = None) -> Path:
    """The directory with Rdata.rdx/.rdb: from deb if given, the installed package, else a download."""
    if deb is None and all((INSTALLED_DATA / n).is_file() for n in DATA_FILES):
        return INSTALLED_DATA
    cache = Path(cache_dir or Path(tempfile.gettempdir()) / "bitnet-janeaustenr")
    if deb is None:
        if all((cache / n).is_file() for n in DATA_FILES):
            return cache
        deb = download_deb(cache)
    return extract_deb_data(Path(deb), cache)


def paragraphs(lines: list[str]) -> list[str]:
    """Printed lines -> paragraphs: blank lines separate them, wrapped lines are joined."""
    out, current = [], []
    for line in [*lines, ""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            out.append(re.sub(r"\s+", " ", " ".join(current)))
            current = []
    return out


def load_books(data_dir: Path) -> dict[str, list[str]]:
    """{novel: its paragraphs}, in publication order."""
    objects = read_lazyload(data_dir)
    missing = [b for b in BOOKS if b not in objects]
    if missing:
        raise ValueError(f"{data_dir}: no {', '.join(missing)} (not the janeaustenr package?)")
    return {b: paragraphs([line or "" for line in objects[b]]) for b in BOOKS}


def split_books(books: dict[str, list[str]], heldout_fraction: float = HELDOUT_FRACTION) -> tuple[list[str], str]:
    """(one training text per novel, the held-out text): each novel's last paragraphs holding
    heldout_fraction of its characters are held out."""
    train, heldout = [], []
    for paras in books.values():
        total, tail, cut = sum(len(p) for p in paras), 0, len(paras)
        while cut > 1 and tail < heldout_fraction * total:
            cut -= 1
            tail += len(paras[cut])
        train.append("\n\n".join(paras[:cut]) + "\n")
        heldout.append("\n\n".join(paras[cut:]) + "\n")
    return train, "\n".join(heldout)


def text_sha256(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for t in texts:
        digest.update(t.encode("utf-8") + b"\0")
    return digest.hexdigest()
