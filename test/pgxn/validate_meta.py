#!/usr/bin/env python3
"""test/pgxn/validate_meta.py - checks a META.json against the PGXN Meta Spec 1.0.0
(https://pgxn.org/spec/) and against the tree it describes.

Debian has no PGXN metadata validator (only pgxnclient, which does not validate), so this
is a small one written from the spec: the required keys and their types, semantic versions
(SemVer 2.0.0), the licence strings the spec names, the prereqs map (phase -> relationship
-> package: version range), release_status, tags, resources and custom keys ("x_").
Beyond the spec, what makes the metadata true of this tree: every provides file and
docfile exists under ROOT, and an extension with a NAME.control in ROOT provides the
control file's default_version.

    python3 test/pgxn/validate_meta.py [--root DIR] META.json

Prints one line per problem ("/path/in/json: what is wrong") and exits 1 when there is
any; prints "valid" and exits 0 otherwise.
"""
import argparse
import json
import os
import re
import sys

SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$")
LICENSES = {
    "agpl_3", "apache_1_1", "apache_2_0", "artistic_1", "artistic_2", "bsd", "freebsd",
    "gfdl_1_2", "gfdl_1_3", "gpl_1", "gpl_2", "gpl_3", "lgpl_2_1", "lgpl_3_0", "mit",
    "mozilla_1_0", "mozilla_1_1", "openssl", "perl_5", "postgresql", "qpl_1_0", "ssleay",
    "sun", "zlib", "open_source", "restricted", "unrestricted", "unknown",
}
PHASES = {"configure", "build", "test", "runtime", "develop"}
RELATIONS = {"requires", "recommends", "suggests", "conflicts"}
RELEASE_STATUSES = {"stable", "testing", "unstable"}
REQUIRED = ("name", "abstract", "maintainer", "license", "provides", "meta-spec", "version")
OPTIONAL = ("description", "tags", "no_index", "prereqs", "release_status", "resources",
            "generated_by")
URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s]+\S*$")


class Checker:
    """Collects the problems of one metadata document, each with its JSON path."""

    def __init__(self, root):
        self.root = root
        self.problems = []

    def fail(self, path, message):
        self.problems.append("%s: %s" % (path or "/", message))

    def string(self, path, value):
        if not isinstance(value, str) or value == "":
            self.fail(path, "must be a non-empty string")
            return False
        return True

    def term(self, path, value):
        """A name: at least two characters, no space, control character, / or \\."""
        if self.string(path, value) and (len(value) < 2 or re.search(r"[\s\x00-\x1f\x7f/\\]", value)):
            self.fail(path, '"%s" is not a valid term (2+ characters, no space, / or \\)' % value)

    def version(self, path, value):
        if not isinstance(value, str) or not SEMVER.match(value):
            self.fail(path, "%s is not a semantic version (MAJOR.MINOR.PATCH)" % json.dumps(value))
            return False
        return True

    def version_range(self, path, value):
        """A prereq version: 0 (any), a version, or comma-separated operator-version terms."""
        if not isinstance(value, str) or value.strip() == "":
            self.fail(path, "%s is not a version range" % json.dumps(value))
            return
        for part in re.split(r",\s*", value.strip()):
            if part == "0":
                continue
            m = re.match(r"^(==|!=|<=|>=|<|>)?\s*(.*)$", part)
            if not SEMVER.match(m.group(2)):
                self.fail(path, '"%s" is not a version or a version range term' % part)

    def url(self, path, value):
        if self.string(path, value) and not URL.match(value):
            self.fail(path, '"%s" is not a URL' % value)

    def string_list(self, path, value, each):
        """A string or a list of them (the spec allows either)."""
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items:
            self.fail(path, "must be a string or a non-empty list of strings")
            return
        for i, item in enumerate(items):
            each("%s[%d]" % (path, i), item)

    def custom_keys(self, path, obj, known):
        for key in obj:
            if key not in known and not key.lower().startswith("x_"):
                self.fail("%s/%s" % (path, key), 'unknown key (custom keys begin with "x_")')

    def mapping(self, path, value):
        if not isinstance(value, dict):
            self.fail(path, "must be an object")
            return False
        return True

    def existing_file(self, path, value):
        if self.string(path, value) and not os.path.isfile(os.path.join(self.root, value)):
            self.fail(path, '"%s" does not exist in %s' % (value, self.root))

    def license(self, path, value):
        if isinstance(value, dict):
            if not value:
                self.fail(path, "must name at least one licence")
            for name, url in value.items():
                self.url("%s/%s" % (path, name), url)
            return

        def known(p, v):
            if self.string(p, v) and v not in LICENSES:
                self.fail(p, '"%s" is not a licence of the spec (%s)' % (v, ", ".join(sorted(LICENSES))))
        self.string_list(path, value, known)

    def provides(self, path, value):
        if not self.mapping(path, value):
            return
        if not value:
            self.fail(path, "must provide at least one extension")
        for name, ext in value.items():
            p = "%s/%s" % (path, name)
            self.term(p, name)
            if not self.mapping(p, ext):
                continue
            for key in ("file", "version"):
                if key not in ext:
                    self.fail("%s/%s" % (p, key), "required key is missing")
            if "file" in ext:
                self.existing_file(p + "/file", ext["file"])
            if "docfile" in ext:
                self.existing_file(p + "/docfile", ext["docfile"])
            if "abstract" in ext:
                self.string(p + "/abstract", ext["abstract"])
            if "version" in ext and self.version(p + "/version", ext["version"]):
                self.control_version(p + "/version", name, ext["version"])
            self.custom_keys(p, ext, ("file", "version", "abstract", "docfile"))

    def control_version(self, path, name, version):
        """An extension with a control file in the tree provides its default_version."""
        control = os.path.join(self.root, name + ".control")
        if not os.path.isfile(control):
            return
        with open(control) as f:
            m = re.search(r"^\s*default_version\s*=\s*'([^']*)'", f.read(), re.M)
        if m is None:
            self.fail(path, "%s.control has no default_version" % name)
        elif m.group(1) != version:
            self.fail(path, '"%s" is not %s.control\'s default_version "%s"' % (version, name, m.group(1)))

    def prereqs(self, path, value):
        if not self.mapping(path, value):
            return
        for phase, relations in value.items():
            p = "%s/%s" % (path, phase)
            if phase not in PHASES and not phase.lower().startswith("x_"):
                self.fail(p, "unknown phase (one of %s)" % ", ".join(sorted(PHASES)))
            if not self.mapping(p, relations):
                continue
            for relation, packages in relations.items():
                q = "%s/%s" % (p, relation)
                if relation not in RELATIONS and not relation.lower().startswith("x_"):
                    self.fail(q, "unknown relationship (one of %s)" % ", ".join(sorted(RELATIONS)))
                if not self.mapping(q, packages):
                    continue
                for package, version in packages.items():
                    self.term("%s/%s" % (q, package), package)
                    self.version_range("%s/%s" % (q, package), version)

    def resources(self, path, value):
        if not self.mapping(path, value):
            return
        if "homepage" in value:
            self.url(path + "/homepage", value["homepage"])
        if "license" in value:
            self.string_list(path + "/license", value["license"], self.url)
        for key, urls in (("bugtracker", ("web",)), ("repository", ("web", "url"))):
            if key in value and self.mapping("%s/%s" % (path, key), value[key]):
                for u in urls:
                    if u in value[key]:
                        self.url("%s/%s/%s" % (path, key, u), value[key][u])
                self.custom_keys("%s/%s" % (path, key), value[key],
                                 urls + (("mailto",) if key == "bugtracker" else ("type",)))
        self.custom_keys(path, value, ("homepage", "license", "bugtracker", "repository"))

    def meta_spec(self, path, value):
        if not self.mapping(path, value):
            return
        if value.get("version") != "1.0.0":
            self.fail(path + "/version", "%s is not a known spec version (1.0.0)" % json.dumps(value.get("version")))
        if "url" in value:
            self.url(path + "/url", value["url"])
        self.custom_keys(path, value, ("version", "url"))

    def document(self, meta):
        if not self.mapping("", meta):
            return
        for key in REQUIRED:
            if key not in meta:
                self.fail("/" + key, "required key is missing")
        checks = {
            "name": self.term, "abstract": self.string, "description": self.string,
            "generated_by": self.string, "version": self.version,
            "maintainer": lambda p, v: self.string_list(p, v, self.string),
            "tags": lambda p, v: self.string_list(p, v, self.tag),
            "license": self.license, "provides": self.provides, "prereqs": self.prereqs,
            "resources": self.resources, "meta-spec": self.meta_spec,
            "release_status": self.release_status, "no_index": self.no_index,
        }
        for key, value in meta.items():
            if key in checks:
                checks[key]("/" + key, value)
        self.custom_keys("", meta, REQUIRED + OPTIONAL)

    def tag(self, path, value):
        if self.string(path, value) and (len(value) > 256 or re.search(r"[\x00-\x1f\x7f/\\]", value)):
            self.fail(path, '"%s" is not a valid tag (1-256 characters, no / or \\)' % value)

    def release_status(self, path, value):
        if value not in RELEASE_STATUSES:
            self.fail(path, "%s is not one of %s" % (json.dumps(value), ", ".join(sorted(RELEASE_STATUSES))))

    def no_index(self, path, value):
        if self.mapping(path, value):
            for key in ("file", "directory"):
                if key in value:
                    self.string_list("%s/%s" % (path, key), value[key], self.string)
            self.custom_keys(path, value, ("file", "directory"))


def main():
    parser = argparse.ArgumentParser(description="Validate a META.json against the PGXN Meta Spec 1.0.0.")
    parser.add_argument("meta", help="the META.json to check")
    parser.add_argument("--root", help="the tree its files are in (default: the META.json's directory)")
    args = parser.parse_args()
    root = args.root or os.path.dirname(os.path.abspath(args.meta))
    checker = Checker(root)
    try:
        with open(args.meta) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        print("%s: cannot be read as JSON: %s" % (args.meta, e))
        return 1
    checker.document(meta)
    for problem in checker.problems:
        print(problem)
    if checker.problems:
        return 1
    print("valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
