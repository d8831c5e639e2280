#!/usr/bin/env python3
"""shellcheck on every shell script of the repository (CTest deploy.shellcheck): files named
*.sh or *.sbatch, and any other file under deploy/ or scripts/ whose first line is a sh/bash
shebang. Build folders, .git and node_modules are skipped. Fails listing shellcheck's findings;
also fails if the known scripts are not among those found (so it cannot pass by finding none)."""
import argparse
import os
import re
import subprocess
import sys

SKIP_DIRS = {".git", "node_modules", "__pycache__"}
SHEBANG = re.compile(rb"^#!\s*(/usr/bin/env\s+)?(/bin/|/usr/bin/)?(ba)?sh\b")


def scripts(root):
    found = []
    for d, dirs, files in os.walk(root):
        rel = os.path.relpath(d, root)
        dirs[:] = [x for x in dirs if x not in SKIP_DIRS and not (rel == "." and x.startswith("build"))
                   and not os.path.exists(os.path.join(d, x, "CMakeCache.txt"))]
        for f in files:
            path = os.path.join(d, f)
            relpath = os.path.relpath(path, root)
            if f.endswith((".sh", ".sbatch")):
                found.append(relpath)
            elif relpath.split(os.sep)[0] in ("deploy", "scripts") and os.path.isfile(path):
                with open(path, "rb") as fh:
                    if SHEBANG.match(fh.readline()):
                        found.append(relpath)
    return sorted(found)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shellcheck", required=True)
    ap.add_argument("--source-dir", required=True)
    args = ap.parse_args()
    found = scripts(args.source_dir)
    for must in ("deploy/launch.sh", "deploy/bind-gpu.sh", "deploy/slurm/shardserve.sbatch",
                 "scripts/install-deps.sh"):
        if must not in found:
            print(f"FAIL: {must} was not found among the scripts: {found}")
            return 1
    r = subprocess.run([args.shellcheck, "--format=gcc", *found], cwd=args.source_dir,
                       capture_output=True, text=True, timeout=100)
    if r.returncode != 0:
        print(r.stdout + r.stderr)
        print(f"FAIL: shellcheck reports findings in the scripts above ({len(found)} checked)")
        return 1
    print(f"shellcheck: {len(found)} scripts clean: {' '.join(found)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
