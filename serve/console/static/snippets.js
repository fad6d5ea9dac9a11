// The request the playground sends (always streamed: `stream: true`, so gRPC's GenerateStream), as code to run elsewhere: curl, Python (HTTP) and Python (gRPC).
// The key is never written into them: they read $ALIGNER_API_KEY.

const shellQuote = (text) => `'${text.replaceAll("'", "'\\''")}'`;

export function snippet(kind, body, base) {
  const json = JSON.stringify(body, null, 2);
  if (kind === "curl") {
    return [
      `curl -sS -N ${shellQuote(base + "v1/generate")} \\`,
      `  -H "Authorization: Bearer $ALIGNER_API_KEY" \\`,
      `  -H "Content-Type: application/json" \\`,
      `  -d ${shellQuote(JSON.stringify(body))}`,
    ].join("\n");
  }
  const literal = `json.loads(r"""${json}""")`;
  if (kind === "python") {
    return [
      "import json, os",
      "",
      "import httpx",
      "",
      `body = ${literal}`,
      `headers = {"Authorization": f"Bearer {os.environ['ALIGNER_API_KEY']}"}`,
      `with httpx.stream("POST", ${JSON.stringify(base + "v1/generate")}, json=body, headers=headers, timeout=600) as reply:`,
      "    reply.raise_for_status()",
      "    for line in reply.iter_lines():",
      "        print(line)",
    ].join("\n");
  }
  return [
    "import json, os",
    "",
    "import grpc",
    "from google.protobuf import json_format",
    "",
    "from proto.aligner.v1 import aligner_pb2, aligner_pb2_grpc  # the aligner package's stubs",
    "",
    `request = json_format.ParseDict(${literal}, aligner_pb2.GenerateRequest())`,
    `channel = grpc.insecure_channel(os.environ.get("ALIGNER_GRPC", "localhost:9000"))`,
    `metadata = [("authorization", f"Bearer {os.environ['ALIGNER_API_KEY']}")]`,
    `for event in aligner_pb2_grpc.AlignerStub(channel).GenerateStream(request, metadata=metadata):`,
    "    print(event)",
  ].join("\n");
}
