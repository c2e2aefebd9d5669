#!/usr/bin/env bash
# Checks the direction of the package's module dependencies (issue 17), on the sources alone:
#   - no product module (PGClient, MeterWire, MeterCore, MeterAPI) imports the mock engine
#     (BillingMock) or the dev kit (MeterDevKit), nor declares either as a dependency;
#   - the mock engine imports no product module above the wire formats (MeterCore, MeterAPI);
#   - in meterctl, only Sources/meterctl/Developer/ imports the dev kit or the mock engine;
#   - every imported module is a declared dependency of its target;
#   - README.md's layout lists exactly the module folders of Sources/.
# The compiler enforces what Package.swift declares; this checks that Package.swift says the
# right thing and that no file reaches around it. Exits 1 naming each violation.
set -euo pipefail
cd "$(dirname "$0")/.."
bad=0
fail() { echo "check-modules: $*" >&2; bad=1; }

product=(PGClient MeterWire MeterCore MeterAPI)
for m in "${product[@]}"; do
  test -d "Sources/$m" || fail "Sources/$m is missing"
  while IFS= read -r hit; do fail "$hit: a product module imports tooling"; done \
    < <(grep -rnE '^\s*(@testable\s+)?import\s+(BillingMock|MeterDevKit)\b' "Sources/$m" || true)
done
while IFS= read -r hit; do fail "$hit: the mock engine imports the product"; done \
  < <(grep -rnE '^\s*(@testable\s+)?import\s+(MeterCore|MeterAPI|MeterDevKit)\b' Sources/BillingMock || true)
while IFS= read -r hit; do fail "$hit: only Sources/meterctl/Developer/ may import the dev kit or the mock"; done \
  < <(grep -rnE '^\s*import\s+(BillingMock|MeterDevKit)\b' Sources/meterctl --include='*.swift' | grep -v '^Sources/meterctl/Developer/' || true)

# The declared dependencies, from SwiftPM's own reading of Package.swift.
deps=$(swift package dump-package 2>/dev/null | python3 -c '
import json, sys
for t in json.load(sys.stdin)["targets"]:
    for d in t.get("dependencies", []):
        name = (d.get("byName") or d.get("target") or [None])[0]
        if name: print(t["name"], name)
')
test -n "$deps" || fail "swift package dump-package gave no target dependencies"
while read -r target dep; do
  case " ${product[*]} BillingMock " in *" $target "*) ;; *) continue ;; esac
  case "$dep" in
    MeterDevKit) fail "Package.swift: $target depends on MeterDevKit" ;;
    BillingMock) [[ $target == BillingMock ]] || fail "Package.swift: $target depends on BillingMock" ;;
    MeterCore|MeterAPI) [[ $target == BillingMock ]] && fail "Package.swift: BillingMock depends on $dep" ;;
  esac
done <<<"$deps"

# Every module a file imports is declared by its target (nothing arrives only transitively), the
# toolchain's own modules aside.
undeclared=$(swift package dump-package 2>/dev/null | python3 -c '
import json, os, re, sys
system = {"Foundation", "FoundationNetworking", "Glibc", "Dispatch", "Synchronization", "XCTest", "_Concurrency"}
pkg = json.load(sys.stdin)
for t in pkg["targets"]:
    declared = {t["name"]}
    for d in t.get("dependencies", []):
        for kind in ("byName", "target", "product"):
            if kind in d and d[kind]:
                declared.add(d[kind][0])
    root = t.get("path") or ("Tests/" if t["type"] == "test" else "Sources/") + t["name"]
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not f.endswith(".swift"):
                continue
            path = os.path.join(dirpath, f)
            for n, line in enumerate(open(path), 1):
                m = re.match(r"\s*(?:@testable\s+|@_exported\s+)?import\s+(?:struct\s+|enum\s+|class\s+|func\s+)?(\w+)", line)
                if m and m.group(1) not in declared and m.group(1) not in system:
                    print("%s:%d: imports %s, not a dependency of %s" % (path, n, m.group(1), t["name"]))
')
while IFS= read -r hit; do [[ -n $hit ]] && fail "$hit"; done <<<"$undeclared"

# The README's layout names every module folder, and no folder that is gone.
readme_modules=$(sed -n '/^## Layout/,/^## /p' README.md | grep -oE '^Sources/[A-Za-z]+/' | sort -u)
tree_modules=$(ls -d Sources/*/ | sort -u)
[[ "$readme_modules" == "$tree_modules" ]] || fail "README's layout lists $(echo $readme_modules), the tree has $(echo $tree_modules)"

if (( bad )); then exit 1; fi
echo "check-modules: product modules (${product[*]}) import neither BillingMock nor MeterDevKit; BillingMock imports no product module; only meterctl/Developer imports tooling; README lists the $(wc -l <<<"$tree_modules") module folders"
