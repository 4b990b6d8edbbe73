{
  "targets": [
    {
      "target_name": "sendfile",
      "sources": ["native/sendfile.cc"],
      "cflags_cc": ["-O2", "-std=c++17"],
      "defines": ["NAPI_VERSION=8"]
    }
  ]
}
