#!/usr/bin/env python3
"""Validates the custom resources (KEDA, prometheus-operator) of rendered manifests offline,
against the JSON schemas kept in k8s/schemas/ (kubernetes-validate knows only built-in kinds
and merely warns about the others).

    validate-crds.py SCHEMA_DIR FILE...             every custom resource must pass
    validate-crds.py SCHEMA_DIR --expect-invalid FILE...   every document must fail

A custom resource whose kind has no schema there is an error, never skipped.
"""
import json
import pathlib
import sys

import jsonschema
import yaml

BUILT_IN = ("", "v1", "apps", "batch", "policy", "autoscaling")


def group_version(api_version):
    if "/" not in api_version:
        return "", api_version
    return api_version.split("/", 1)


def is_custom(doc):
    group, _ = group_version(doc.get("apiVersion", ""))
    return group not in BUILT_IN and not group.endswith(".k8s.io")


def schema_for(schema_dir, doc):
    group, version = group_version(doc["apiVersion"])
    path = schema_dir / f"{doc['kind'].lower()}-{group}-{version}.json"
    if not path.exists():
        return path, None
    return path, json.loads(path.read_text())


def errors_of(schema_dir, doc):
    path, schema = schema_for(schema_dir, doc)
    if schema is None:
        return [f"no schema for {doc['apiVersion']} {doc['kind']} (expected {path})"]
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path)))
    ]


def main(argv):
    schema_dir = pathlib.Path(argv[1])
    expect_invalid = argv[2:3] == ["--expect-invalid"]
    files = argv[3:] if expect_invalid else argv[2:]
    failed = False
    checked = 0
    for f in files:
        for doc in yaml.safe_load_all(pathlib.Path(f).read_text()):
            if not doc or not is_custom(doc):
                continue
            checked += 1
            name = f"{f}: {doc['kind']}/{doc.get('metadata', {}).get('name', '?')}"
            errs = errors_of(schema_dir, doc)
            if expect_invalid and schema_for(schema_dir, doc)[1] is None:
                print(f"{name}: no schema to reject it with ({errs[0]})", file=sys.stderr)
                failed = True
            elif expect_invalid:
                if errs:
                    print(f"{name}: rejected as it must be ({errs[0]})")
                else:
                    print(f"{name}: accepted, but it is invalid", file=sys.stderr)
                    failed = True
            elif errs:
                failed = True
                for e in errs:
                    print(f"{name}: {e}", file=sys.stderr)
            else:
                print(f"{name}: valid")
    if checked == 0:
        print("no custom resource found in " + " ".join(files), file=sys.stderr)
        failed = True
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
