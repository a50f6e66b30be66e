#!/usr/bin/env python3
"""A tiny copy of a shipped dataset folder, for scripts/gpu-validate.sh --dry-run.

The dry run trains the same tasks as the GPU call, on the CPU, in seconds: it passes
`--data-dir` (joulebench run, and the scripts/torch/ programs) a folder of the same format
holding only the first records of each file. Formats (as src/data/ reads them):
  *-idx?-ubyte[.gz]   IDX (MNIST layout): the first --train records of train-*, --test of t10k-*
  *.txt[.gz]          text: the first --text-chars characters (whole UTF-8 characters)
  *.csv[.gz]          digits: the first 1 + --train + --test lines
  *.bin               CIFAR-10 binary batches: the first --test records (3,073 bytes each)
gzip is kept where the source is gzipped. Files of other kinds (README, SHA256SUMS) are not
copied: no SHA256SUMS means joulebench records the files as unverified, which they are.
Nothing here is a benchmark input: the dry run's numbers are not results.

Usage: tiny-data.py SRC_DIR DST_DIR [--train 256] [--test 256] [--text-chars 40000]
Exit codes: 0 written (prints the number of files), 2 bad arguments or an unreadable source.
"""

import argparse
import gzip
import os
import struct
import sys

CIFAR_RECORD = 1 + 32 * 32 * 3


def open_read(path):
    with open(path, "rb") as f:
        head = f.read(2)
    return gzip.open(path, "rb") if head == b"\x1f\x8b" else open(path, "rb")


def write(path, data, gz):
    if gz:
        with gzip.open(path, "wb", compresslevel=1) as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)


def idx_head(data, n):
    magic, = struct.unpack(">I", data[:4])
    ndim = magic & 0xFF
    dims = list(struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim]))
    item = 1
    for d in dims[1:]:
        item *= d
    width = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}[(magic >> 8) & 0xFF]
    keep = min(n, dims[0])
    dims[0] = keep
    body_at = 4 + 4 * ndim
    return (struct.pack(">I", magic) + struct.pack(">" + "I" * ndim, *dims)
            + data[body_at:body_at + keep * item * width])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("src")
    p.add_argument("dst")
    p.add_argument("--train", type=int, default=256)
    p.add_argument("--test", type=int, default=256)
    p.add_argument("--text-chars", type=int, default=40000)
    a = p.parse_args()
    if not os.path.isdir(a.src):
        print(f"tiny-data: error: {a.src} is not a folder", file=sys.stderr)
        return 2
    os.makedirs(a.dst, exist_ok=True)
    written = 0
    for name in sorted(os.listdir(a.src)):
        src = os.path.join(a.src, name)
        dst = os.path.join(a.dst, name)
        if not os.path.isfile(src):
            continue
        gz = name.endswith(".gz")
        base = name[:-3] if gz else name
        try:
            with open_read(src) as f:
                if "-idx" in base and base.endswith("-ubyte"):
                    n = a.test if base.startswith("t10k") else a.train
                    write(dst, idx_head(f.read(), n), gz)
                elif base.endswith(".txt"):
                    text = f.read().decode("utf-8")[: a.text_chars]
                    write(dst, text.encode("utf-8"), gz)
                elif base.endswith(".csv"):
                    lines = f.read().split(b"\n")
                    write(dst, b"\n".join(lines[: 1 + a.train + a.test]) + b"\n", gz)
                elif base.endswith(".bin"):
                    write(dst, f.read(CIFAR_RECORD * a.test), gz)
                else:
                    continue
        except (OSError, ValueError, KeyError, struct.error) as e:
            print(f"tiny-data: error: {src}: {e}", file=sys.stderr)
            return 2
        written += 1
    print(f"tiny-data: {written} file(s) {a.src} -> {a.dst}")
    return 0 if written else 2


if __name__ == "__main__":
    sys.exit(main())
