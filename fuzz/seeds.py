#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/seeds/TARGET/) from the
known-answer vectors, the KEK fixtures and sample requests. Run from the
repository root; the output is committed."""
import base64, hashlib, json, os, pathlib

root = pathlib.Path(__file__).resolve().parent.parent
seeds = root / "fuzz" / "seeds"

def write(target, name, data):
    d = seeds / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)

vectors = root / "tests" / "vectors"
for i, v in enumerate(json.loads((vectors / "envelope_v1.json").read_text())):
    if len(v["dek"]) == 32 and v["context"] == "":
        write("envelope", f"vector-{i}", bytes.fromhex(v["dek"]) + bytes.fromhex(v["envelope"]))
for i, v in enumerate(json.loads((vectors / "envelope_v2.json").read_text())):
    if len(v["dek"]) == 32 and v["context"] == "":
        write("envelope", f"v2-vector-{i}", bytes.fromhex(v["dek"]) + bytes.fromhex(v["envelope"]))
for i, v in enumerate(json.loads((vectors / "stream_v1.json").read_text())):
    if len(v["dek"]) == 32 and len(v["stream"]) < 20000:
        write("stream", f"vector-{i}", bytes.fromhex(v["dek"]) + bytes.fromhex(v["stream"]))
for i, v in enumerate(json.loads((vectors / "record_v1.json").read_text())):
    record = bytes.fromhex(v["record"]) if "record" in v else None
    if record:
        write("record", f"vector-{i}", record)
        write("record", f"vector-{i}-body", record[:-32])

fixtures = root / "tests" / "fixtures"
pem = (fixtures / "kek-rsa2048.pem").read_text()
write("kek", "rsa2048.pem", pem.encode())
der = base64.b64decode("".join(l for l in pem.splitlines() if not l.startswith("-----")))
write("kek", "rsa2048.der", der)
write("kek", "rsa2048-truncated.der", der[:300])

def xml(method, params):
    body = "".join(f"<param><value>{p}</value></param>" for p in params)
    return f"<?xml version=\"1.0\"?><methodCall><methodName>{method}</methodName><params>{body}</params></methodCall>".encode()

key_id = hashlib.sha256(b"x").hexdigest()
write("xmlrpc_request", "status", xml("status", []))
write("xmlrpc_request", "generate", xml("generate", ["<int>128</int>"]))
write("xmlrpc_request", "contains", xml("contains", [f"<string>{key_id}</string>"]))
write("xmlrpc_request", "get_wrapped", xml("get_wrapped", [f"<string>{key_id}</string>"]))
write("xmlrpc_request", "get_key", xml("get_key", [f"<string>{pem}</string>"]))
write("xmlrpc_request", "multicall", xml("system.multicall", [
    "<array><data><value><struct><member><name>methodName</name><value><string>status</string></value></member>"
    "<member><name>params</name><value><array><data></data></array></value></member></struct></value></data></array>"]))

def rpc(method, params, id_=1):
    return {"jsonrpc": "2.0", "method": method, "params": params, "id": id_}

write("jsonrpc_request", "status", json.dumps(rpc("status", [])).encode())
write("jsonrpc_request", "generate", json.dumps(rpc("generate", {"strength": 128})).encode())
write("jsonrpc_request", "contains", json.dumps(rpc("contains", [key_id])).encode())
write("jsonrpc_request", "get_key", json.dumps(rpc("get_key", {"kek": pem})).encode())
write("jsonrpc_request", "batch", json.dumps([rpc("status", [], 1), rpc("get_wrapped", [key_id], 2)]).encode())
