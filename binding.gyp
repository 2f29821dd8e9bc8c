{
  "targets": [
    {
      "target_name": "shmbus",
      "sources": [
        "native/addon.cc",
        "native/barrier.cc",
        "native/doorbell.cc",
        "native/errors.cc",
        "native/segment.cc",
        "native/wait.cc"
      ],
      "include_dirs": [
        "<!(node -p \"require('node-addon-api').include_dir\")"
      ],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS"
      ],
      "cflags!": ["-fno-exceptions", "-O3"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++17", "-O3"],
      "cflags": ["-O2", "-Wall", "-Wextra"],
      "cflags_cc": ["-std=c++17", "-fexceptions", "-O2", "-Wall", "-Wextra"],
      "ldflags": ["-pthread"]
    }
  ]
}
