#!/usr/bin/env bash
# test/suites/80_pgxn.sh - META.json stays valid for PGXN: test/pgxn/validate_meta.py checks
# it against the PGXN Meta Spec 1.0.0 and against the tree (Debian packages no validator:
# apt-cache search pgxn finds only pgxnclient). Then broken copies of it, each with one
# mistake, must be refused with the reason, so a validator that accepts anything fails here.
set -u
cd "$KC_ROOT" || exit 1
dir="$KC_TEST_TMP/pgxn"
mkdir -p "$dir"
validate() { python3 test/pgxn/validate_meta.py --root "$KC_ROOT" "$@"; }

if out=$(validate META.json); then
  echo "ok - pgxn: META.json is valid (PGXN Meta Spec 1.0.0, files and versions of the tree)"
else
  echo "not ok - pgxn: META.json is valid"; echo "$out" | sed 's/^/# /'
fi
meta_version=$(python3 -c 'import json; print(json.load(open("META.json"))["version"])')
deb_version=$(dpkg-parsechangelog -l debian/changelog -S Version 2>/dev/null)
if [ "$meta_version" = "${deb_version%-*}" ]; then
  echo "ok - pgxn: META.json's version $meta_version is the Debian packages' upstream version"
else
  echo "not ok - pgxn: META.json's version $meta_version is the Debian packages' upstream version ($deb_version)"
fi

# broken NAME PYTHON EXPECTED: META.json changed by the PYTHON statement (on m, the parsed
# document) is refused with a message containing EXPECTED
broken() {
  local name=$1 change=$2 expected=$3 out
  python3 -c "import json, sys
m = json.load(open('META.json'))
$change
json.dump(m, open(sys.argv[1], 'w'), indent=3)" "$dir/$name.json" || { echo "not ok - pgxn: mutation $name"; return; }
  if out=$(validate "$dir/$name.json"); then
    echo "not ok - pgxn: refuses META.json with $name (accepted)"
  elif ! grep -qF -- "$expected" <<<"$out"; then
    echo "not ok - pgxn: refuses META.json with $name, saying $expected"; echo "$out" | sed 's/^/# /'
  else
    echo "ok - pgxn: refuses META.json with $name: $(grep -F -- "$expected" <<<"$out" | head -1)"
  fi
}
broken "no license" 'del m["license"]' '/license: required key is missing'
broken "a version that is not semver" 'm["version"] = "0.2"' '/version: "0.2" is not a semantic version'
broken "a provides file not in the tree" 'm["provides"]["kc_flow"]["file"] = "kc_flow--9.9.9.sql"' \
  '/provides/kc_flow/file: "kc_flow--9.9.9.sql" does not exist'
broken "a provides version not the control's" 'm["provides"]["kc_flow"]["version"] = "0.1.0"' \
  "is not kc_flow.control's default_version"
broken "a provides entry without version" 'del m["provides"]["kc_flow"]["version"]' \
  '/provides/kc_flow/version: required key is missing'
broken "an unknown licence" 'm["license"] = "wtfpl"' '"wtfpl" is not a licence of the spec'
broken "an unknown release status" 'm["release_status"] = "beta"' '/release_status: "beta" is not one of'
broken "an unknown prereq phase" 'm["prereqs"]["install"] = m["prereqs"].pop("runtime")' \
  '/prereqs/install: unknown phase'
broken "a prereq version that is not a range" 'm["prereqs"]["runtime"]["requires"]["PostgreSQL"] = "15"' \
  '"15" is not a version or a version range term'
broken "a custom key without x_" 'm["homepage"] = "https://example.org/"' '/homepage: unknown key'
broken "an unknown meta-spec version" 'm["meta-spec"]["version"] = "2.0.0"' '/meta-spec/version: "2.0.0" is not a known spec version'

# and the spec's other allowed forms are accepted: a licence map, one maintainer as a string,
# a version range, a custom key
python3 -c 'import json, sys
m = json.load(open("META.json"))
m["license"] = {"PostgreSQL": "https://www.postgresql.org/about/licence/"}
m["maintainer"] = "kc_flow developers <maintainers@example.org>"
m["prereqs"]["runtime"]["requires"]["PostgreSQL"] = ">= 15.0.0, < 16.0.0"
m["x_debian"] = {"source": "kc-flow"}
json.dump(m, open(sys.argv[1], "w"))' "$dir/variants.json"
if out=$(validate "$dir/variants.json"); then
  echo "ok - pgxn: accepts the spec's other forms (licence map, maintainer string, version range, x_ key)"
else
  echo "not ok - pgxn: accepts the spec's other forms"; echo "$out" | sed 's/^/# /'
fi
