# Builds the oneDNN backend's addon: `npm run build:native` (node-gyp, offline:
# npm's nodedir points at the installed Node headers). Needs libdnnl-dev.
# -fno-trapping-math and -fno-math-errno let GCC vectorise loops with a select
# on a comparison or a square root (the masked BatchNorm gradient and Adam
# ran as scalar code without them); nothing here reads floating-point
# exception flags or errno, and IEEE square roots are exact either way.
{
  "targets": [
    {
      "target_name": "onednn_backend",
      "sources": ["src/addon.cc"],
      "include_dirs": ["<!(node -p \"require('node-addon-api').include_dir\")"],
      "defines": ["NAPI_VERSION=8", "NAPI_CPP_EXCEPTIONS"],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-fno-rtti"],
      "cflags_cc": ["-std=c++17", "-O3", "-fno-trapping-math", "-fno-math-errno", "-fopenmp", "-mavx2", "-mfma", "-fexceptions"],
      "libraries": ["-ldnnl", "-fopenmp"]
    }
  ]
}
