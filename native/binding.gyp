# Builds the oneDNN backend's addon: `npm run build:native` (node-gyp, offline:
# npm's nodedir points at the installed Node headers). Needs libdnnl-dev.
{
  "targets": [
    {
      "target_name": "onednn_backend",
      "sources": ["src/addon.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O3", "-fopenmp", "-mavx2", "-mfma", "-fexceptions"],
      "libraries": ["-ldnnl", "-fopenmp"]
    }
  ]
}
