#!/usr/bin/env python3
"""Extracts the one operation each adapter calls from the providers' official
OpenAPI documents (../shared/specs/, unmodified copies), with every component
it references, into tests/specs/*.extract.json. The extracts are unmodified
subsets; the known defects are fixed by the *.overlay.json merge patches that
tests/openapi.rs applies before starting Prism.

    python3 tests/specs/extract.py ../shared/specs   # needs PyYAML
"""
import json
import pathlib
import sys

import yaml

SOURCES = {
    "whatsapp": ("whatsapp-business-messaging-api_v23.0.yaml", "/{Version}/{Phone-Number-ID}/messages"),
    "twilio": ("twilio_api_v2010.json", "/2010-04-01/Accounts/{AccountSid}/Messages.json"),
}

# Components the operation does not reference but the overlay uses: Meta's
# own error object, for the error responses /messages leaves undocumented.
EXTRA = {"whatsapp": ["#/components/schemas/GraphAPIError"]}


def refs(node, out):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str) and v.startswith("#/components/"):
                out.add(v)
            elif k == "mapping" and isinstance(v, dict):  # discriminator targets
                out.update(r for r in v.values() if isinstance(r, str) and r.startswith("#/components/"))
            else:
                refs(v, out)
    elif isinstance(node, list):
        for v in node:
            refs(v, out)


def resolve(doc, ref):
    node = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def extract(doc, path, extra=()):
    item = {k: v for k, v in doc["paths"][path].items() if k in ("post", "parameters", "servers")}
    keep = {"openapi": doc["openapi"], "info": doc["info"], "paths": {path: item}}
    for k in ("servers", "security"):
        if k in doc:
            keep[k] = doc[k]
    seen, todo = set(), set(extra)
    refs(item, todo)
    if "security" in doc:
        for req in doc["security"]:
            for name in req:
                todo.add("#/components/securitySchemes/" + name)
    refs(item.get("post", {}).get("security", []), todo)
    for req in item.get("post", {}).get("security", []):
        for name in req:
            todo.add("#/components/securitySchemes/" + name)
    while todo:
        ref = todo.pop()
        if ref in seen:
            continue
        seen.add(ref)
        refs(resolve(doc, ref), todo)
    components = {}
    for ref in sorted(seen):
        _, _, section, name = ref.split("/", 3)
        if "/" in name:  # a pointer into a component: keep the whole component
            name = name.split("/")[0]
        components.setdefault(section, {})[name] = doc["components"][section][name]
    keep["components"] = components
    return keep


def main():
    src = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/specs")
    out = pathlib.Path(__file__).parent
    for name, (file, path) in SOURCES.items():
        text = (src / file).read_text()
        doc = json.loads(text) if file.endswith(".json") else yaml.safe_load(text)
        part = extract(doc, path, EXTRA.get(name, ()))
        (out / f"{name}.extract.json").write_text(json.dumps(part, indent=1, sort_keys=True) + "\n")
        print(name, len(json.dumps(part)), "bytes")


if __name__ == "__main__":
    main()
