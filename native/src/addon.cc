// The native half of the `onednn` TensorFlow.js backend (src/backend/onednn.ts).
//
// Every function works in place on memory the caller owns: the inputs and the
// outputs are Float32Arrays allocated by the JavaScript side (the CPU
// backend's own storage), so no tensor is copied between JavaScript and C++.
// Activations stay NHWC; convolution weights arrive in TensorFlow's HWIO
// layout and are reordered into whatever blocked layout oneDNN picks.
//
// Creating a oneDNN primitive costs far more than running it on these small
// images, so each one is built once per shape and kept in a cache keyed by
// its parameters. The memory this file allocates itself (the shared
// scratchpad, reordered weights, pooling workspaces) is counted, so a test can
// check that nothing grows from one training step to the next.
#include <napi.h>
#include <omp.h>

#include <oneapi/dnnl/dnnl.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace {

using dnnl::algorithm;
using dnnl::memory;
using dnnl::prop_kind;
using tag = memory::format_tag;
using dt = memory::data_type;

dnnl::engine& Engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

dnnl::stream& Stream() {
  static dnnl::stream stream(Engine());
  return stream;
}

// ---------------------------------------------------------------------------
// Counted native memory.

struct Stats {
  int64_t bytes = 0;
  int64_t buffers = 0;
  int64_t primitives = 0;
};
Stats stats;

// A 64-byte aligned buffer that only grows; its bytes are counted in `stats`.
class Buffer {
 public:
  Buffer() = default;
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  ~Buffer() { Release(); }

  void* Ensure(size_t bytes) {
    if (bytes <= bytes_) return data_;
    Release();
    size_t rounded = (bytes + 63) / 64 * 64;
    data_ = std::aligned_alloc(64, rounded);
    if (data_ == nullptr) throw std::bad_alloc();
    bytes_ = rounded;
    stats.bytes += static_cast<int64_t>(rounded);
    stats.buffers += 1;
    return data_;
  }

  void Release() {
    if (data_ == nullptr) return;
    std::free(data_);
    stats.bytes -= static_cast<int64_t>(bytes_);
    stats.buffers -= 1;
    data_ = nullptr;
    bytes_ = 0;
  }

  void* data() const { return data_; }
  size_t capacity() const { return bytes_; }

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

// One scratchpad shared by every primitive (they run one at a time), sized to
// the largest asked for. User-managed so that its size is counted.
Buffer scratchpad;

memory Scratchpad(const memory::desc& md) {
  return memory(md, Engine(), scratchpad.Ensure(std::max<size_t>(md.get_size(), 64)));
}

dnnl::primitive_attr ScratchAttr() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

// ScratchAttr, with a ReLU applied to the output if `relu`.
dnnl::primitive_attr ScratchAttr(bool relu) {
  dnnl::primitive_attr attr = ScratchAttr();
  if (relu) {
    dnnl::post_ops ops;
    ops.append_eltwise(1.f, algorithm::eltwise_relu, 0.f, 0.f);
    attr.set_post_ops(ops);
  }
  return attr;
}

// Primitive caches: built once per shape key, kept for the process's life.
template <typename T>
using Cache = std::unordered_map<std::string, std::unique_ptr<T>>;

template <typename T, typename Make>
T& Cached(Cache<T>& cache, const std::string& key, Make make) {
  auto it = cache.find(key);
  if (it != cache.end()) return *it->second;
  auto entry = make();
  T& ref = *entry;
  cache.emplace(key, std::move(entry));
  stats.primitives += 1;
  return ref;
}

std::string Key(const char* kind, const std::vector<int64_t>& values) {
  std::string key(kind);
  for (int64_t v : values) {
    key += ',';
    key += std::to_string(v);
  }
  return key;
}

// ---------------------------------------------------------------------------
// Argument helpers.

float* F32(const Napi::Value& value, const char* name) {
  if (!value.IsTypedArray() ||
      value.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
    throw Napi::TypeError::New(value.Env(), std::string("`") + name + "` must be a Float32Array");
  }
  return value.As<Napi::Float32Array>().Data();
}

float* OptionalF32(const Napi::Value& value, const char* name) {
  if (value.IsNull() || value.IsUndefined()) return nullptr;
  return F32(value, name);
}

size_t Length(const Napi::Value& value) { return value.As<Napi::Float32Array>().ElementLength(); }

std::vector<int64_t> Ints(const Napi::Value& value, size_t count, const char* name) {
  if (!value.IsArray() || value.As<Napi::Array>().Length() != count) {
    throw Napi::TypeError::New(value.Env(), std::string("`") + name + "` must be an array of " +
                                                std::to_string(count) + " integers");
  }
  auto array = value.As<Napi::Array>();
  std::vector<int64_t> out(count);
  for (uint32_t i = 0; i < count; ++i) {
    out[i] = array.Get(i).As<Napi::Number>().Int64Value();
  }
  return out;
}

void Check(const Napi::Env& env, bool ok, const std::string& message) {
  if (!ok) throw Napi::RangeError::New(env, message);
}

// Wraps a function so oneDNN's errors reach JavaScript as exceptions.
template <Napi::Value (*F)(const Napi::CallbackInfo&)>
Napi::Value Guarded(const Napi::CallbackInfo& info) {
  try {
    return F(info);
  } catch (const dnnl::error& e) {
    throw Napi::Error::New(info.Env(), std::string("oneDNN: ") + e.what());
  } catch (const std::bad_alloc&) {
    throw Napi::Error::New(info.Env(), "oneDNN backend: out of memory");
  }
}

// Below this many elements an OpenMP region costs more than it saves.
constexpr int64_t kParallelMin = 1 << 15;

// ---------------------------------------------------------------------------
// Convolution. `p` holds, in order:
//   n, h, w, c, kh, kw, o, oh, ow, sh, sw, padTop, padLeft, padBottom,
//   padRight, dilationH, dilationW (TensorFlow's dilation: 1 means none).

struct ConvShape {
  memory::dims src, weights, dst, bias, strides, dilates, padL, padR;
  explicit ConvShape(const std::vector<int64_t>& p)
      : src{p[0], p[3], p[1], p[2]},
        weights{p[6], p[3], p[4], p[5]},
        dst{p[0], p[6], p[7], p[8]},
        bias{p[6]},
        strides{p[9], p[10]},
        dilates{p[15] - 1, p[16] - 1},
        padL{p[11], p[12]},
        padR{p[13], p[14]} {}
};

constexpr size_t kConvParams = 17;

// How a convolution runs. Direct f32 on the NHWC data as it is is the
// default. The gradients of 3×3 stride-1 layers with channels in multiples
// of 16 run Winograd F(4×4, 3×3) instead, about twice as fast at ResNet's
// sizes, on oneDNN's blocked layout (it has no NHWC Winograd), reordered in
// and out. The forward pass stays direct: its Winograd weights need oneDNN's
// single-threaded weight transform, which costs more than it saves when the
// weights change every step. bf16 (opt-in, for AVX-512 BF16 processors)
// converts the inputs of every convolution to bfloat16 and accumulates in f32.
enum class Mode { kDirect, kWinograd, kBf16 };

struct Settings {
  bool winograd = true;
  bool bf16 = false;
};
Settings settings;

Mode ChooseMode(const std::vector<int64_t>& p, bool forward, bool keptWeights = false) {
  if (settings.bf16) return Mode::kBf16;
  bool wino = (!forward || keptWeights) && settings.winograd && p[4] == 3 && p[5] == 3 && p[9] == 1 && p[10] == 1 &&
              p[15] == 1 && p[16] == 1 && p[3] % 16 == 0 && p[6] % 16 == 0 && p[1] >= 4 &&
              p[2] >= 4;
  return wino ? Mode::kWinograd : Mode::kDirect;
}

// The descriptors of one convolution in one mode: the data a primitive reads
// (in the mode's type) and the f32 gradients or outputs it writes.
struct ConvDescs {
  algorithm alg;
  memory::desc src, weights, dst;
  memory::desc srcOut, dstOut;
};

ConvDescs Descs(const ConvShape& s, Mode m) {
  dt in = m == Mode::kBf16 ? dt::bf16 : dt::f32;
  tag act = m == Mode::kDirect ? tag::nhwc : tag::any;
  ConvDescs d;
  d.alg = m == Mode::kWinograd ? algorithm::convolution_winograd : algorithm::convolution_direct;
  d.src = memory::desc(s.src, in, act);
  d.weights = memory::desc(s.weights, in, tag::any);
  d.dst = memory::desc(s.dst, in, act);
  d.srcOut = memory::desc(s.src, dt::f32, act);
  d.dstOut = memory::desc(s.dst, dt::f32, act);
  return d;
}

// The forward primitive; as a hint for the backward ones (`hint`), its
// destination has the type the backward passes read.
dnnl::convolution_forward::primitive_desc ConvForwardDesc(const ConvShape& s, Mode m, bool bias,
                                                          bool relu, prop_kind prop,
                                                          bool hint = false) {
  ConvDescs d = Descs(s, m);
  dnnl::primitive_attr attr = ScratchAttr(relu);
  memory::desc b = bias ? memory::desc(s.bias, dt::f32, tag::x) : memory::desc();
  dnnl::convolution_forward::desc desc(prop, d.alg, d.src, d.weights, b, hint ? d.dst : d.dstOut,
                                       s.strides, s.dilates, s.padL, s.padR);
  return dnnl::convolution_forward::primitive_desc(desc, attr, Engine());
}

// Reordered weights and activations live only while one primitive runs, so
// every primitive shares these buffers.
Buffer weightsScratch;
Buffer weightGradScratch;
Buffer activationScratch[2];

// A tensor handed over as f32 in TensorFlow's layout (NHWC activations, HWIO
// weights), converted to and from the layout and type the primitive wants.
struct Io {
  memory::desc user, wanted;
  bool reorder = false;
  dnnl::reorder prim;
  Buffer* scratch = nullptr;

  void Init(const memory::desc& userDesc, const memory::desc& want, bool input, Buffer* buffer) {
    user = userDesc;
    wanted = want;
    scratch = buffer;
    reorder = user != wanted;
    if (!reorder) return;
    prim = input ? dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), user, Engine(), wanted))
                 : dnnl::reorder(dnnl::reorder::primitive_desc(Engine(), wanted, Engine(), user));
  }

  // An input, reordered into the scratch buffer if need be.
  memory In(float* data) {
    memory given(user, Engine(), data);
    if (!reorder) return given;
    memory out(wanted, Engine(), scratch->Ensure(wanted.get_size()));
    prim.execute(Stream(), given, out);
    return out;
  }

  // Where the primitive writes an output; `Finish` moves it to `data`.
  memory Out(float* data) {
    if (!reorder) return memory(user, Engine(), data);
    return memory(wanted, Engine(), scratch->Ensure(wanted.get_size()));
  }

  void Finish(memory& written, float* data) {
    memory given(user, Engine(), data);
    if (reorder) prim.execute(Stream(), written, given);
  }
};

memory::desc NhwcF32(const memory::dims& dims) { return memory::desc(dims, dt::f32, tag::nhwc); }
memory::desc HwioF32(const memory::dims& dims) { return memory::desc(dims, dt::f32, tag::hwio); }

// Builds a primitive in the mode chosen for `p`, or the direct one when
// oneDNN has no implementation of that mode for the shape.
template <typename Entry, typename Make>
std::unique_ptr<Entry> InMode(const std::vector<int64_t>& p, bool forward, Make make,
                              bool keptWeights = false) {
  Mode m = ChooseMode(p, forward, keptWeights);
  if (m != Mode::kDirect) {
    try {
      return make(m);
    } catch (const dnnl::error&) {
      // Fall through to the direct algorithm.
    }
  }
  return make(Mode::kDirect);
}

// Cache keys include the settings and the thread count, which can change
// between calls.
std::vector<int64_t> WithSettings(std::vector<int64_t> values) {
  values.push_back(settings.winograd);
  values.push_back(settings.bf16);
  // oneDNN fixes a primitive's thread count when it is created: one made
  // before setThreads(1) would go on running on every core.
  values.push_back(omp_get_max_threads());
  return values;
}

// Weights kept in the layout a forward convolution wants, for inference:
// the JavaScript side gives a weight tensor a stamp while its values cannot
// change (see `weightStamp` in onednn.ts) and calls forgetWeights(stamp)
// when they can (an in-place optimizer update, disposal). A model's weights
// are then reordered once, not at every call, and the forward pass can use
// Winograd, whose weight transform is too slow to repeat every call.
struct KeptWeights {
  memory::desc desc;
  std::unique_ptr<Buffer> buffer;
};
std::unordered_map<int64_t, KeptWeights> keptWeights;
// Buffers of forgotten weights, for the next ones (training steps and model
// rebuilds reuse the same sizes).
std::vector<std::unique_ptr<Buffer>> spareWeightBuffers;
constexpr size_t kMaxSpareWeightBuffers = 256;

std::unique_ptr<Buffer> SpareWeightBuffer(size_t bytes) {
  auto best = spareWeightBuffers.end();
  for (auto it = spareWeightBuffers.begin(); it != spareWeightBuffers.end(); ++it) {
    size_t cap = (*it)->capacity();
    if (cap >= bytes && (best == spareWeightBuffers.end() || cap < (*best)->capacity())) best = it;
  }
  if (best == spareWeightBuffers.end()) return std::make_unique<Buffer>();
  auto buffer = std::move(*best);
  spareWeightBuffers.erase(best);
  return buffer;
}

// The weights `filter` (stamp `stamp`) in the layout of `io`, reordered on
// first use. With `scale` (one factor per output channel, the last axis of
// HWIO), the kept copy is of the weights times those factors: a BatchNorm
// folded into the convolution for inference. The stamp then covers the
// factors too (see `derivedStamp` in onednn.ts).
memory KeptWeightsFor(int64_t stamp, float* filter, const Io& io, const float* scale = nullptr) {
  if (!io.reorder && scale == nullptr) return memory(io.user, Engine(), filter);
  KeptWeights& kept = keptWeights[stamp];
  if (!kept.buffer || kept.desc != io.wanted) {
    size_t bytes = io.wanted.get_size();
    if (!kept.buffer) kept.buffer = SpareWeightBuffer(bytes);
    void* to = kept.buffer->Ensure(bytes);
    const float* from = filter;
    if (scale != nullptr) {
      // Scaled in TensorFlow's layout, then reordered (or kept as it is).
      size_t n = io.user.get_size() / sizeof(float);
      int64_t channels = io.user.data.dims[0];
      float* scaled = static_cast<float*>(io.reorder ? weightsScratch.Ensure(n * sizeof(float)) : to);
#pragma omp parallel for if (int64_t(n) >= kParallelMin)
      for (int64_t i = 0; i < int64_t(n); ++i) scaled[i] = filter[i] * scale[i % channels];
      from = scaled;
    }
    if (io.reorder) {
      io.prim.execute(Stream(), {{DNNL_ARG_FROM, memory(io.user, Engine(), const_cast<float*>(from))},
                                 {DNNL_ARG_TO, memory(io.wanted, Engine(), to)}});
    }
    kept.desc = io.wanted;
  }
  return memory(io.wanted, Engine(), kept.buffer->data());
}

// forgetWeights(stamp): the weights with this stamp may change or are gone.
Napi::Value ForgetWeights(const Napi::CallbackInfo& info) {
  auto it = keptWeights.find(info[0].As<Napi::Number>().Int64Value());
  if (it == keptWeights.end()) return info.Env().Undefined();
  if (it->second.buffer && spareWeightBuffers.size() < kMaxSpareWeightBuffers) {
    spareWeightBuffers.push_back(std::move(it->second.buffer));
  }
  keptWeights.erase(it);
  return info.Env().Undefined();
}

// 1×1 stride-1 convolutions without padding are matrix products over the
// rows of NHWC data: y[M×O] = x[M×C]·w[C×O], M = n·h·w, where HWIO weights
// are already the C×O matrix. As products they read TensorFlow's layouts as
// they are, while a convolution primitive reorders the weights at every call
// and back for their gradient: for the 2048×512 weights of ResNet50's last
// stage that made each pass 1.5 to 3 times slower than the product. Used for
// weights that change every call (training); kept weights stay convolutions.
bool IsPointwise(const std::vector<int64_t>& p) {
  return !settings.bf16 && p[4] == 1 && p[5] == 1 && p[9] == 1 && p[10] == 1 && p[11] == 0 &&
         p[12] == 0 && p[13] == 0 && p[14] == 0;
}

struct PointwiseForward {
  dnnl::matmul::primitive_desc pd;
  dnnl::matmul prim;
};
Cache<PointwiseForward> pointwiseForwardCache;

void PointwiseConvForward(const std::vector<int64_t>& p, float* x, float* filter, float* bias,
                          float* y, bool relu) {
  int64_t m = p[0] * p[1] * p[2], k = p[3], n = p[6];
  auto& e = Cached(pointwiseForwardCache,
                   Key("pointwise", WithSettings({m, k, n, bias != nullptr, relu})), [&] {
    auto entry = std::make_unique<PointwiseForward>();
    dnnl::primitive_attr attr = ScratchAttr(relu);
    memory::desc b = bias ? memory::desc({1, n}, dt::f32, tag::ab) : memory::desc();
    dnnl::matmul::desc desc(memory::desc({m, k}, dt::f32, tag::ab),
                            memory::desc({k, n}, dt::f32, tag::ab), b,
                            memory::desc({m, n}, dt::f32, tag::ab));
    entry->pd = dnnl::matmul::primitive_desc(desc, attr, Engine());
    entry->prim = dnnl::matmul(entry->pd);
    return entry;
  });
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, memory(e.pd.src_desc(), Engine(), x)},
      {DNNL_ARG_WEIGHTS, memory(e.pd.weights_desc(), Engine(), filter)},
      {DNNL_ARG_DST, memory(e.pd.dst_desc(), Engine(), y)},
      {DNNL_ARG_SCRATCHPAD, Scratchpad(e.pd.scratchpad_desc())},
  };
  if (bias != nullptr) args[DNNL_ARG_BIAS] = memory(e.pd.bias_desc(), Engine(), bias);
  e.prim.execute(Stream(), args);
}

// dnnl_sgemm (row-major) into `c`, reporting failure.
void Sgemm(const Napi::Env& env, char ta, char tb, int64_t m, int64_t n, int64_t k, const float* a,
           int64_t lda, const float* b, int64_t ldb, float* c, int64_t ldc) {
  auto st = static_cast<dnnl::status>(dnnl_sgemm(ta, tb, m, n, k, 1.f, a, lda, b, ldb, 0.f, c, ldc));
  Check(env, st == dnnl::status::success, "dnnl_sgemm failed");
}

// Convolutions with at most four output positions (ResNet50's last stage
// at 64×64 inputs works on 2×2 maps) as one matrix product per filter tap.
// oneDNN's kernels there compute the padding too (a 3×3 'same' layer over
// 2×2 does 2.25 times the useful work) and reorder the weights of 2.4 M
// values at every call; that stage took about 65 of a 500 ms training step.
// For tap t = (di, dj), the pairs (input position, output position) it links
// are gathered into contiguous rows, multiplied by that tap's C×O block of
// the HWIO weights as it is, and added into place. Every buffer is this
// code's own and contiguous.
constexpr int64_t kMaxTapOutputs = 4;

bool IsTiny(const std::vector<int64_t>& p) {
  return !settings.bf16 && p[7] * p[8] <= kMaxTapOutputs && p[7] * p[8] > 0;
}

// For each tap, in HWIO order, its (input position, output position) pairs
// within one image.
std::vector<std::vector<std::pair<int64_t, int64_t>>> TapPairs(const std::vector<int64_t>& p) {
  std::vector<std::vector<std::pair<int64_t, int64_t>>> taps(size_t(p[4] * p[5]));
  for (int64_t di = 0; di < p[4]; ++di) {
    for (int64_t dj = 0; dj < p[5]; ++dj) {
      auto& pairs = taps[size_t(di * p[5] + dj)];
      for (int64_t oi = 0; oi < p[7]; ++oi) {
        for (int64_t oj = 0; oj < p[8]; ++oj) {
          int64_t i = oi * p[9] + di * p[15] - p[11];
          int64_t j = oj * p[10] + dj * p[16] - p[12];
          if (i >= 0 && i < p[1] && j >= 0 && j < p[2]) pairs.emplace_back(i * p[2] + j, oi * p[8] + oj);
        }
      }
    }
  }
  return taps;
}

Buffer tapRows[3];

// rows[(n·P + k)·width + c] = from[(n·positions + at(k))·width + c] for the P pairs.
template <typename At>
float* GatherRows(Buffer& buffer, const float* from, int64_t n, int64_t positions, int64_t width,
                  int64_t count, At at) {
  float* rows = static_cast<float*>(buffer.Ensure(size_t(n * count * width) * sizeof(float)));
#pragma omp parallel for if (n * count * width >= kParallelMin)
  for (int64_t r = 0; r < n * count; ++r) {
    int64_t b = r / count, k = r % count;
    std::memcpy(rows + r * width, from + (b * positions + at(k)) * width, size_t(width) * sizeof(float));
  }
  return rows;
}

// to[(n·positions + at(k))·width + c] += rows[(n·P + k)·width + c].
template <typename At>
void ScatterAddRows(float* to, const float* rows, int64_t n, int64_t positions, int64_t width,
                    int64_t count, At at) {
  // Rows of one image may meet at one position: split by image only.
#pragma omp parallel for if (n * count * width >= kParallelMin)
  for (int64_t b = 0; b < n; ++b) {
    for (int64_t k = 0; k < count; ++k) {
      float* out = to + (b * positions + at(k)) * width;
      const float* in = rows + (b * count + k) * width;
#pragma omp simd
      for (int64_t c = 0; c < width; ++c) out[c] += in[c];
    }
  }
}

// The sum over taps of scatter_t(gather_t(from)·op(w_t)) into `to`: for the
// forward pass from x into y with op(w_t) = w_t, for the input gradient from
// dy into dx with its transpose.
void SumOfTapProducts(const Napi::Env& env, const std::vector<int64_t>& p, const float* from,
                      const float* w, float* to, bool forward) {
  int64_t n = p[0], inPos = p[1] * p[2], outPos = p[7] * p[8], c = p[3], o = p[6];
  int64_t fromPos = forward ? inPos : outPos, fromWidth = forward ? c : o;
  int64_t toPos = forward ? outPos : inPos, toWidth = forward ? o : c;
  std::fill(to, to + n * toPos * toWidth, 0.f);
  if (n == 0) return;
  auto taps = TapPairs(p);
  for (size_t t = 0; t < taps.size(); ++t) {
    const auto& pairs = taps[t];
    int64_t count = int64_t(pairs.size());
    if (count == 0) continue;
    auto source = [&](int64_t k) { return forward ? pairs[k].first : pairs[k].second; };
    auto target = [&](int64_t k) { return forward ? pairs[k].second : pairs[k].first; };
    float* rows = GatherRows(tapRows[0], from, n, fromPos, fromWidth, count, source);
    float* prod = static_cast<float*>(tapRows[1].Ensure(size_t(n * count * toWidth) * sizeof(float)));
    Sgemm(env, 'N', forward ? 'N' : 'T', n * count, toWidth, fromWidth, rows, fromWidth,
          w + int64_t(t) * c * o, o, prod, toWidth);
    ScatterAddRows(to, prod, n, toPos, toWidth, count, target);
  }
}

// y = epilogue(Σ_t gather_t(x)·w_t): per output channel times `scale` (if
// any), plus `shift` (if any), then ReLU if asked.
void TinyConvForward(const Napi::Env& env, const std::vector<int64_t>& p, const float* x,
                     const float* w, const float* scale, const float* shift, float* y, bool relu) {
  SumOfTapProducts(env, p, x, w, y, true);
  if (scale == nullptr && shift == nullptr && !relu) return;
  int64_t rows = p[0] * p[7] * p[8], o = p[6];
#pragma omp parallel for if (rows * o >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    float* row = y + r * o;
#pragma omp simd
    for (int64_t k = 0; k < o; ++k) {
      float v = row[k];
      if (scale != nullptr) v *= scale[k];
      if (shift != nullptr) v += shift[k];
      row[k] = relu && v < 0.f ? 0.f : v;
    }
  }
}

// dx = Σ_t scatter_t(gather_t(dy)·w_tᵀ)
void TinyConvBackwardData(const Napi::Env& env, const std::vector<int64_t>& p, const float* dy,
                          const float* w, float* dx) {
  SumOfTapProducts(env, p, dy, w, dx, false);
}

// dw_t = gather_t(x)ᵀ·gather_t(dy), straight into tap t's block of the HWIO gradient.
void TinyConvBackwardFilter(const Napi::Env& env, const std::vector<int64_t>& p, const float* x,
                            const float* dy, float* dw) {
  int64_t n = p[0], inPos = p[1] * p[2], outPos = p[7] * p[8], c = p[3], o = p[6];
  auto taps = TapPairs(p);
  for (size_t t = 0; t < taps.size(); ++t) {
    const auto& pairs = taps[t];
    int64_t count = int64_t(pairs.size());
    float* block = dw + int64_t(t) * c * o;
    if (count == 0 || n == 0) {
      std::fill(block, block + c * o, 0.f);
      continue;
    }
    float* a = GatherRows(tapRows[0], x, n, inPos, c, count, [&](int64_t k) { return pairs[k].first; });
    float* g = GatherRows(tapRows[2], dy, n, outPos, o, count, [&](int64_t k) { return pairs[k].second; });
    Sgemm(env, 'T', 'N', c, o, n * count, a, c, g, o, block, o);
  }
}

struct ConvForward {
  dnnl::convolution_forward::primitive_desc pd;
  dnnl::convolution_forward prim;
  Io src, weights, dst;
};
Cache<ConvForward> convForwardCache;

// conv2dForward(x, filter, bias | null, y, params, relu, weightStamp?, scale?)
// `scale` (per output channel, with a positive stamp) multiplies the weights.
Napi::Value Conv2dForward(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  float* x = F32(info[0], "x");
  float* filter = F32(info[1], "filter");
  float* bias = OptionalF32(info[2], "bias");
  float* y = F32(info[3], "y");
  auto p = Ints(info[4], kConvParams, "params");
  bool relu = info[5].ToBoolean();
  // A positive stamp: these weights stay as they are until forgetWeights(stamp).
  int64_t stamp = info.Length() > 6 && info[6].IsNumber() ? info[6].As<Napi::Number>().Int64Value() : 0;
  const float* scale = info.Length() > 7 ? OptionalF32(info[7], "scale") : nullptr;
  ConvShape s(p);
  Check(env, scale == nullptr || (stamp > 0 && Length(info[7]) == size_t(p[6])),
        "conv2dForward: scale needs a weight stamp and one value per output channel");
  Check(env, Length(info[0]) == size_t(p[0] * p[1] * p[2] * p[3]), "conv2dForward: x size");
  Check(env, Length(info[1]) == size_t(p[4] * p[5] * p[3] * p[6]), "conv2dForward: filter size");
  Check(env, Length(info[3]) == size_t(p[0] * p[7] * p[8] * p[6]), "conv2dForward: y size");
  if (stamp == 0 && IsPointwise(p)) {
    PointwiseConvForward(p, x, filter, bias, y, relu);
    return env.Undefined();
  }
  if (IsTiny(p)) {
    // With `scale`, `bias` holds the folded BatchNorm's shift.
    TinyConvForward(env, p, x, filter, scale, bias, y, relu);
    return env.Undefined();
  }
  auto values = p;
  values.push_back(bias != nullptr);
  values.push_back(relu);
  values.push_back(stamp > 0);
  auto& e = Cached(convForwardCache, Key("convF", WithSettings(values)), [&] {
    return InMode<ConvForward>(p, true, [&](Mode m) {
      auto entry = std::make_unique<ConvForward>();
      entry->pd = ConvForwardDesc(s, m, bias != nullptr, relu, prop_kind::forward_inference);
      entry->prim = dnnl::convolution_forward(entry->pd);
      entry->src.Init(NhwcF32(s.src), entry->pd.src_desc(), true, &activationScratch[0]);
      entry->weights.Init(HwioF32(s.weights), entry->pd.weights_desc(), true, &weightsScratch);
      entry->dst.Init(NhwcF32(s.dst), entry->pd.dst_desc(), false, &activationScratch[1]);
      return entry;
    }, stamp > 0);
  });
  memory out = e.dst.Out(y);
  std::unordered_map<int, memory> args{
      {DNNL_ARG_SRC, e.src.In(x)},
      {DNNL_ARG_WEIGHTS, stamp > 0 ? KeptWeightsFor(stamp, filter, e.weights, scale) : e.weights.In(filter)},
      {DNNL_ARG_DST, out},
      {DNNL_ARG_SCRATCHPAD, Scratchpad(e.pd.scratchpad_desc())},
  };
  if (bias != nullptr) args[DNNL_ARG_BIAS] = memory(e.pd.bias_desc(), Engine(), bias);
  e.prim.execute(Stream(), args);
  e.dst.Finish(out, y);
  return env.Undefined();
}

struct ConvBackwardData {
  dnnl::convolution_backward_data::primitive_desc pd;
  dnnl::convolution_backward_data prim;
  Io diffDst, weights, diffSrc;
};
Cache<ConvBackwardData> convBackwardDataCache;

// conv2dBackwardData(dy, filter, dx, params)
Napi::Value Conv2dBackwardData(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  float* dy = F32(info[0], "dy");
  float* filter = F32(info[1], "filter");
  float* dx = F32(info[2], "dx");
  auto p = Ints(info[3], kConvParams, "params");
  ConvShape s(p);
  Check(env, Length(info[2]) == size_t(p[0] * p[1] * p[2] * p[3]), "conv2dBackwardData: dx size");
  Check(env, Length(info[0]) == size_t(p[0] * p[7] * p[8] * p[6]), "conv2dBackwardData: dy size");
  if (IsPointwise(p)) {
    // dx[M×C] = dy[M×O]·wᵀ
    Sgemm(env, 'N', 'T', p[0] * p[1] * p[2], p[3], p[6], dy, p[6], filter, p[6], dx, p[3]);
    return env.Undefined();
  }
  if (IsTiny(p)) {
    TinyConvBackwardData(env, p, dy, filter, dx);
    return env.Undefined();
  }
  auto& e = Cached(convBackwardDataCache, Key("convBD", WithSettings(p)), [&] {
    return InMode<ConvBackwardData>(p, false, [&](Mode m) {
      auto entry = std::make_unique<ConvBackwardData>();
      auto hint = ConvForwardDesc(s, m, false, false, prop_kind::forward_training, true);
      ConvDescs d = Descs(s, m);
      dnnl::convolution_backward_data::desc desc(d.alg, d.srcOut, d.weights, d.dst, s.strides,
                                                 s.dilates, s.padL, s.padR);
      entry->pd =
          dnnl::convolution_backward_data::primitive_desc(desc, ScratchAttr(), Engine(), hint);
      entry->prim = dnnl::convolution_backward_data(entry->pd);
      entry->diffDst.Init(NhwcF32(s.dst), entry->pd.diff_dst_desc(), true, &activationScratch[0]);
      entry->weights.Init(HwioF32(s.weights), entry->pd.weights_desc(), true, &weightsScratch);
      entry->diffSrc.Init(NhwcF32(s.src), entry->pd.diff_src_desc(), false,
                          &activationScratch[1]);
      return entry;
    });
  });
  memory out = e.diffSrc.Out(dx);
  e.prim.execute(Stream(), {
                               {DNNL_ARG_DIFF_DST, e.diffDst.In(dy)},
                               {DNNL_ARG_WEIGHTS, e.weights.In(filter)},
                               {DNNL_ARG_DIFF_SRC, out},
                               {DNNL_ARG_SCRATCHPAD, Scratchpad(e.pd.scratchpad_desc())},
                           });
  e.diffSrc.Finish(out, dx);
  return env.Undefined();
}

struct ConvBackwardWeights {
  dnnl::convolution_backward_weights::primitive_desc pd;
  dnnl::convolution_backward_weights prim;
  Io src, diffDst, diffWeights;
};
Cache<ConvBackwardWeights> convBackwardWeightsCache;

// conv2dBackwardFilter(x, dy, dfilter, params)
Napi::Value Conv2dBackwardFilter(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  float* x = F32(info[0], "x");
  float* dy = F32(info[1], "dy");
  float* dw = F32(info[2], "dfilter");
  auto p = Ints(info[3], kConvParams, "params");
  ConvShape s(p);
  Check(env, Length(info[0]) == size_t(p[0] * p[1] * p[2] * p[3]), "conv2dBackwardFilter: x size");
  Check(env, Length(info[1]) == size_t(p[0] * p[7] * p[8] * p[6]), "conv2dBackwardFilter: dy size");
  Check(env, Length(info[2]) == size_t(p[4] * p[5] * p[3] * p[6]),
        "conv2dBackwardFilter: dfilter size");
  if (IsPointwise(p)) {
    // dw[C×O] = xᵀ·dy
    Sgemm(env, 'T', 'N', p[3], p[6], p[0] * p[1] * p[2], x, p[3], dy, p[6], dw, p[6]);
    return env.Undefined();
  }
  if (IsTiny(p)) {
    TinyConvBackwardFilter(env, p, x, dy, dw);
    return env.Undefined();
  }
  auto& e = Cached(convBackwardWeightsCache, Key("convBW", WithSettings(p)), [&] {
    return InMode<ConvBackwardWeights>(p, false, [&](Mode m) {
      auto entry = std::make_unique<ConvBackwardWeights>();
      auto hint = ConvForwardDesc(s, m, false, false, prop_kind::forward_training, true);
      ConvDescs d = Descs(s, m);
      memory::desc diffWeights(s.weights, dt::f32, tag::any);
      dnnl::convolution_backward_weights::desc desc(d.alg, d.src, diffWeights, d.dst, s.strides,
                                                    s.dilates, s.padL, s.padR);
      entry->pd =
          dnnl::convolution_backward_weights::primitive_desc(desc, ScratchAttr(), Engine(), hint);
      entry->prim = dnnl::convolution_backward_weights(entry->pd);
      entry->src.Init(NhwcF32(s.src), entry->pd.src_desc(), true, &activationScratch[0]);
      entry->diffDst.Init(NhwcF32(s.dst), entry->pd.diff_dst_desc(), true, &activationScratch[1]);
      entry->diffWeights.Init(HwioF32(s.weights), entry->pd.diff_weights_desc(), false,
                              &weightGradScratch);
      return entry;
    });
  });
  memory out = e.diffWeights.Out(dw);
  e.prim.execute(Stream(), {
                               {DNNL_ARG_SRC, e.src.In(x)},
                               {DNNL_ARG_DIFF_DST, e.diffDst.In(dy)},
                               {DNNL_ARG_DIFF_WEIGHTS, out},
                               {DNNL_ARG_SCRATCHPAD, Scratchpad(e.pd.scratchpad_desc())},
                           });
  e.diffWeights.Finish(out, dw);
  return env.Undefined();
}

// ---------------------------------------------------------------------------
// Pooling. `p`: n, h, w, c, kh, kw, oh, ow, sh, sw, padTop, padLeft,
// padBottom, padRight. Average pooling leaves padding out of the count, as
// TensorFlow.js does (its gradient does not: see PoolGradAlgorithm).

constexpr size_t kPoolParams = 14;

struct PoolShape {
  memory::dims src, dst, kernel, strides, padL, padR;
  explicit PoolShape(const std::vector<int64_t>& p)
      : src{p[0], p[3], p[1], p[2]},
        dst{p[0], p[3], p[6], p[7]},
        kernel{p[4], p[5]},
        strides{p[8], p[9]},
        padL{p[10], p[11]},
        padR{p[12], p[13]} {}
};

algorithm PoolAlgorithm(bool max) {
  return max ? algorithm::pooling_max : algorithm::pooling_avg_exclude_padding;
}

// TensorFlow.js's average-pooling gradient divides by the whole window, padding
// included, though its forward pass leaves padding out; every TensorFlow.js
// backend does so, and this one matches them.
algorithm PoolGradAlgorithm(bool max) {
  return max ? algorithm::pooling_max : algorithm::pooling_avg_include_padding;
}

dnnl::pooling_forward::primitive_desc PoolForwardDesc(const PoolShape& s, algorithm alg,
                                                      prop_kind prop) {
  dnnl::pooling_forward::desc d(prop, alg, memory::desc(s.src, dt::f32, tag::nhwc),
                                memory::desc(s.dst, dt::f32, tag::nhwc), s.strides, s.kernel,
                                s.padL, s.padR);
  return dnnl::pooling_forward::primitive_desc(d, ScratchAttr(), Engine());
}

struct PoolForward {
  dnnl::pooling_forward::primitive_desc pd;
  dnnl::pooling_forward prim;
};
Cache<PoolForward> poolForwardCache;

// poolForward(x, y, params, max)
Napi::Value PoolForwardFn(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  float* x = F32(info[0], "x");
  float* y = F32(info[1], "y");
  auto p = Ints(info[2], kPoolParams, "params");
  bool max = info[3].ToBoolean();
  PoolShape s(p);
  Check(env, Length(info[0]) == size_t(p[0] * p[1] * p[2] * p[3]), "poolForward: x size");
  Check(env, Length(info[1]) == size_t(p[0] * p[6] * p[7] * p[3]), "poolForward: y size");
  auto values = p;
  values.push_back(max);
  values.push_back(omp_get_max_threads());  // fixed at creation, as for convolutions
  auto& e = Cached(poolForwardCache, Key("poolF", values), [&] {
    auto entry = std::make_unique<PoolForward>();
    entry->pd = PoolForwardDesc(s, PoolAlgorithm(max), prop_kind::forward_inference);
    entry->prim = dnnl::pooling_forward(entry->pd);
    return entry;
  });
  e.prim.execute(Stream(), {
                               {DNNL_ARG_SRC, memory(e.pd.src_desc(), Engine(), x)},
                               {DNNL_ARG_DST, memory(e.pd.dst_desc(), Engine(), y)},
                               {DNNL_ARG_SCRATCHPAD, Scratchpad(e.pd.scratchpad_desc())},
                           });
  return env.Undefined();
}

// Max pooling's gradient needs the forward pass's workspace (where each
// maximum was), which TensorFlow.js does not keep: the forward pass is rerun
// on the saved input to rebuild it.
struct PoolBackward {
  dnnl::pooling_forward::primitive_desc fwdPd;
  dnnl::pooling_forward fwd;
  dnnl::pooling_backward::primitive_desc pd;
  dnnl::pooling_backward prim;
  Buffer workspace;
  Buffer output;
};
Cache<PoolBackward> poolBackwardCache;

// poolBackward(x | null, dy, dx, params, max)
Napi::Value PoolBackwardFn(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  bool max = info[4].ToBoolean();
  float* x = max ? F32(info[0], "x") : nullptr;
  float* dy = F32(info[1], "dy");
  float* dx = F32(info[2], "dx");
  auto p = Ints(info[3], kPoolParams, "params");
  PoolShape s(p);
  Check(env, Length(info[2]) == size_t(p[0] * p[1] * p[2] * p[3]), "poolBackward: dx size");
  Check(env, Length(info[1]) == size_t(p[0] * p[6] * p[7] * p[3]), "poolBackward: dy size");
  auto values = p;
  values.push_back(max);
  values.push_back(omp_get_max_threads());  // fixed at creation, as for convolutions
  auto& e = Cached(poolBackwardCache, Key("poolB", values), [&] {
    auto entry = std::make_unique<PoolBackward>();
    entry->fwdPd = PoolForwardDesc(s, PoolGradAlgorithm(max), prop_kind::forward_training);
    entry->fwd = dnnl::pooling_forward(entry->fwdPd);
    dnnl::pooling_backward::desc d(PoolGradAlgorithm(max), memory::desc(s.src, dt::f32, tag::nhwc),
                                   memory::desc(s.dst, dt::f32, tag::nhwc), s.strides, s.kernel,
                                   s.padL, s.padR);
    entry->pd = dnnl::pooling_backward::primitive_desc(d, ScratchAttr(), Engine(), entry->fwdPd);
    entry->prim = dnnl::pooling_backward(entry->pd);
    return entry;
  });
  std::unordered_map<int, memory> args{
      {DNNL_ARG_DIFF_DST, memory(e.pd.diff_dst_desc(), Engine(), dy)},
      {DNNL_ARG_DIFF_SRC, memory(e.pd.diff_src_desc(), Engine(), dx)},
      {DNNL_ARG_SCRATCHPAD, Scratchpad(e.pd.scratchpad_desc())},
  };
  if (max) {
    auto wsDesc = e.fwdPd.workspace_desc();
    memory ws(wsDesc, Engine(), e.workspace.Ensure(std::max<size_t>(wsDesc.get_size(), 64)));
    memory out(e.fwdPd.dst_desc(), Engine(), e.output.Ensure(e.fwdPd.dst_desc().get_size()));
    e.fwd.execute(Stream(), {
                                {DNNL_ARG_SRC, memory(e.fwdPd.src_desc(), Engine(), x)},
                                {DNNL_ARG_DST, out},
                                {DNNL_ARG_WORKSPACE, ws},
                                {DNNL_ARG_SCRATCHPAD, Scratchpad(e.fwdPd.scratchpad_desc())},
                            });
    args[DNNL_ARG_WORKSPACE] = ws;
  }
  e.prim.execute(Stream(), args);
  return env.Undefined();
}

// ---------------------------------------------------------------------------
// Matrix product, batched: c[b] = op(a[b]) · op(b[b]) (+ bias, ReLU), where a
// batch of 1 on either side is broadcast.

// matMul(a, b, c, [batchA, batchB, m, n, k], transposeA, transposeB, bias | null, relu)
Napi::Value MatMul(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  float* a = F32(info[0], "a");
  float* b = F32(info[1], "b");
  float* c = F32(info[2], "c");
  auto p = Ints(info[3], 5, "params");
  bool ta = info[4].ToBoolean();
  bool tb = info[5].ToBoolean();
  float* bias = OptionalF32(info[6], "bias");
  bool relu = info[7].ToBoolean();
  int64_t batchA = p[0], batchB = p[1], m = p[2], n = p[3], k = p[4];
  int64_t batch = std::max(batchA, batchB);
  Check(env, Length(info[0]) == size_t(batchA * m * k), "matMul: a size");
  Check(env, Length(info[1]) == size_t(batchB * k * n), "matMul: b size");
  Check(env, Length(info[2]) == size_t(batch * m * n), "matMul: c size");
  if (bias != nullptr) Check(env, Length(info[6]) == size_t(n), "matMul: bias size");
  for (int64_t i = 0; i < batch; ++i) {
    const float* ai = a + (batchA == 1 ? 0 : i) * m * k;
    const float* bi = b + (batchB == 1 ? 0 : i) * k * n;
    float* ci = c + i * m * n;
    if (m * n * k == 0) {
      std::fill(ci, ci + m * n, 0.f);
      continue;
    }
    Sgemm(env, ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, ai, ta ? m : k, bi, tb ? k : n, ci, n);
    if (bias != nullptr || relu) {
      for (int64_t r = 0; r < m; ++r) {
        float* row = ci + r * n;
        if (bias != nullptr) {
          for (int64_t j = 0; j < n; ++j) row[j] += bias[j];
        }
        if (relu) {
          for (int64_t j = 0; j < n; ++j) row[j] = row[j] < 0.f ? 0.f : row[j];
        }
      }
    }
  }
  return env.Undefined();
}

// ---------------------------------------------------------------------------
// Batch normalisation over the channels (the last axis) of `rows` × `channels`
// data, training mode: statistics of this batch, the biased variance (as
// tf.moments), sums accumulated in double so the result does not depend on
// how the rows are split between threads beyond rounding.

struct ChannelSums {
  std::vector<double> a, b;
};

// Sums f(row, c) into two per-channel accumulators, over all rows, in parallel.
template <typename F>
void ReduceRows(int64_t rows, int64_t channels, std::vector<double>& outA,
                std::vector<double>& outB, F f) {
  int threads = rows * channels >= kParallelMin ? omp_get_max_threads() : 1;
  std::vector<ChannelSums> partial(threads);
#pragma omp parallel num_threads(threads)
  {
    int t = omp_get_thread_num();
    int nt = omp_get_num_threads();
    auto& mine = partial[t];
    mine.a.assign(channels, 0.0);
    mine.b.assign(channels, 0.0);
    int64_t begin = rows * t / nt, end = rows * (t + 1) / nt;
    double* sa = mine.a.data();
    double* sb = mine.b.data();
    for (int64_t r = begin; r < end; ++r) f(r, sa, sb);
  }
  outA.assign(channels, 0.0);
  outB.assign(channels, 0.0);
  for (auto& part : partial) {
    if (part.a.empty()) continue;
    for (int64_t c = 0; c < channels; ++c) {
      outA[c] += part.a[c];
      outB[c] += part.b[c];
    }
  }
}

// batchNormTrain(x, gamma, beta, y, mean, variance, rows, channels, epsilon, relu?):
// with `relu`, y is the ReLU of the normalised values (the layer after fused in).
Napi::Value BatchNormTrain(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  const float* x = F32(info[0], "x");
  const float* gamma = F32(info[1], "gamma");
  const float* beta = F32(info[2], "beta");
  float* y = F32(info[3], "y");
  float* mean = F32(info[4], "mean");
  float* variance = F32(info[5], "variance");
  int64_t rows = info[6].As<Napi::Number>().Int64Value();
  int64_t channels = info[7].As<Napi::Number>().Int64Value();
  float epsilon = info[8].As<Napi::Number>().FloatValue();
  bool relu = info.Length() > 9 && info[9].ToBoolean();
  Check(env, Length(info[0]) == size_t(rows * channels) && Length(info[3]) == Length(info[0]),
        "batchNormTrain: x or y size");
  Check(env, Length(info[1]) == size_t(channels) && Length(info[2]) == size_t(channels),
        "batchNormTrain: gamma or beta size");
  std::vector<double> sum, sumSq;
  ReduceRows(rows, channels, sum, sumSq, [&](int64_t r, double* s, double* q) {
    const float* row = x + r * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) {
      double v = row[c];
      s[c] += v;
      q[c] += v * v;
    }
  });
  std::vector<float> scale(channels), shift(channels);
  for (int64_t c = 0; c < channels; ++c) {
    double m = sum[c] / double(rows);
    double var = std::max(0.0, sumSq[c] / double(rows) - m * m);
    mean[c] = float(m);
    variance[c] = float(var);
    double s = double(gamma[c]) / std::sqrt(var + double(epsilon));
    scale[c] = float(s);
    shift[c] = float(double(beta[c]) - m * s);
  }
  const float* sc = scale.data();
  const float* sh = shift.data();
#pragma omp parallel for if (rows * channels >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = x + r * channels;
    float* out = y + r * channels;
    if (relu) {
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) out[c] = std::max(in[c] * sc[c] + sh[c], 0.f);
    } else {
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) out[c] = in[c] * sc[c] + sh[c];
    }
  }
  return env.Undefined();
}

// The two passes of batchNormTrainGrad; `Masked`: dy counts only where y > 0.
template <bool Masked>
void BatchNormGradPasses(const float* dy, const float* x, const float* y, const float* mean,
                         const float* variance, const float* gamma, float* dx, float* dgamma,
                         float* dbeta, int64_t rows, int64_t channels, float epsilon) {
  std::vector<double> sumDy, sumDyXc;
  std::vector<float> m(mean, mean + channels);
  const float* mp = m.data();
  ReduceRows(rows, channels, sumDy, sumDyXc, [&](int64_t r, double* s, double* q) {
    const float* g = dy + r * channels;
    const float* in = x + r * channels;
    if constexpr (Masked) {
      const float* mask = y + r * channels;
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) {
        float gc = mask[c] > 0.f ? g[c] : 0.f;
        s[c] += gc;
        q[c] += double(gc) * (double(in[c]) - double(mp[c]));
      }
    } else {
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) {
        s[c] += g[c];
        q[c] += double(g[c]) * (double(in[c]) - double(mp[c]));
      }
    }
  });
  // dx = a·dy + b·x + d per channel, with x̂ = (x − μ)/σ expanded.
  std::vector<float> ca(channels), cb(channels), cd(channels);
  for (int64_t c = 0; c < channels; ++c) {
    double inv = 1.0 / std::sqrt(double(variance[c]) + double(epsilon));
    double db = sumDy[c];
    double dg = sumDyXc[c] * inv;
    dbeta[c] = float(db);
    dgamma[c] = float(dg);
    double g = double(gamma[c]) * inv;
    double R = double(rows);
    ca[c] = float(g);
    cb[c] = float(-g * dg * inv / R);
    cd[c] = float(-g * db / R + g * dg * inv * double(mp[c]) / R);
  }
  const float* pa = ca.data();
  const float* pb = cb.data();
  const float* pd = cd.data();
#pragma omp parallel for if (rows * channels >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* g = dy + r * channels;
    const float* in = x + r * channels;
    float* out = dx + r * channels;
    if constexpr (Masked) {
      const float* mask = y + r * channels;
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) {
        out[c] = pa[c] * (mask[c] > 0.f ? g[c] : 0.f) + pb[c] * in[c] + pd[c];
      }
    } else {
#pragma omp simd
      for (int64_t c = 0; c < channels; ++c) out[c] = pa[c] * g[c] + pb[c] * in[c] + pd[c];
    }
  }
}

// The gradient of the above with the statistics as functions of x:
//   dβ = Σ dy, dγ = Σ dy·x̂, dx = γ/σ · (dy − dβ/R − x̂·dγ/R).
// With the ReLU fused in, `y` (the forward output) masks dy: the gradient
// flows where y > 0, as ReLU's own gradient (step(x)·dy) would pass it.
// batchNormTrainGrad(dy, x, mean, variance, gamma, dx, dgamma, dbeta, rows, channels, epsilon,
//                    y | null)
Napi::Value BatchNormTrainGrad(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  const float* dy = F32(info[0], "dy");
  const float* x = F32(info[1], "x");
  const float* mean = F32(info[2], "mean");
  const float* variance = F32(info[3], "variance");
  const float* gamma = F32(info[4], "gamma");
  float* dx = F32(info[5], "dx");
  float* dgamma = F32(info[6], "dgamma");
  float* dbeta = F32(info[7], "dbeta");
  int64_t rows = info[8].As<Napi::Number>().Int64Value();
  int64_t channels = info[9].As<Napi::Number>().Int64Value();
  float epsilon = info[10].As<Napi::Number>().FloatValue();
  const float* y = info.Length() > 11 ? OptionalF32(info[11], "y") : nullptr;
  size_t size = size_t(rows * channels);
  Check(env, Length(info[0]) == size && Length(info[1]) == size && Length(info[5]) == size,
        "batchNormTrainGrad: dy, x or dx size");
  Check(env, y == nullptr || Length(info[11]) == size, "batchNormTrainGrad: y size");
  if (y != nullptr) {
    BatchNormGradPasses<true>(dy, x, y, mean, variance, gamma, dx, dgamma, dbeta, rows, channels,
                              epsilon);
  } else {
    BatchNormGradPasses<false>(dy, x, y, mean, variance, gamma, dx, dgamma, dbeta, rows, channels,
                               epsilon);
  }
  return env.Undefined();
}

// batchNormInfer(x, mean, variance, gamma | null, beta | null, y, channels, epsilon):
// inference with given statistics, any of which may be of length 1.
Napi::Value BatchNormInfer(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  const float* x = F32(info[0], "x");
  const float* mean = F32(info[1], "mean");
  const float* variance = F32(info[2], "variance");
  const float* gamma = OptionalF32(info[3], "gamma");
  const float* beta = OptionalF32(info[4], "beta");
  float* y = F32(info[5], "y");
  int64_t channels = info[6].As<Napi::Number>().Int64Value();
  float epsilon = info[7].As<Napi::Number>().FloatValue();
  size_t size = Length(info[0]);
  Check(env, channels > 0 && size % size_t(channels) == 0 && Length(info[5]) == size,
        "batchNormInfer: sizes");
  auto at = [&](const float* v, const Napi::Value& value, int64_t c, float fallback) {
    if (v == nullptr) return fallback;
    return Length(value) == 1 ? v[0] : v[c];
  };
  std::vector<float> scale(channels), shift(channels);
  for (int64_t c = 0; c < channels; ++c) {
    // As TensorFlow.js: (x − mean) · γ / sqrt(var + ε) + β, in float.
    float inv = 1.f / std::sqrt(at(variance, info[2], c, 1.f) + epsilon);
    scale[c] = at(gamma, info[3], c, 1.f) * inv;
    shift[c] = at(beta, info[4], c, 0.f) - at(mean, info[1], c, 0.f) * scale[c];
  }
  int64_t rows = int64_t(size) / channels;
  const float* sc = scale.data();
  const float* sh = shift.data();
#pragma omp parallel for if (int64_t(size) >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* in = x + r * channels;
    float* out = y + r * channels;
#pragma omp simd
    for (int64_t c = 0; c < channels; ++c) out[c] = in[c] * sc[c] + sh[c];
  }
  return env.Undefined();
}

// ---------------------------------------------------------------------------
// Element-wise kernels.

// relu(x, y)
Napi::Value Relu(const Napi::CallbackInfo& info) {
  const float* x = F32(info[0], "x");
  float* y = F32(info[1], "y");
  int64_t n = int64_t(Length(info[0]));
  Check(info.Env(), Length(info[1]) == size_t(n), "relu: y size");
#pragma omp parallel for simd if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) y[i] = x[i] < 0.f ? 0.f : x[i];
  return info.Env().Undefined();
}

// reluGrad(dy, x, dx): dy where x > 0, else 0 (TensorFlow.js's step(x)·dy).
Napi::Value ReluGrad(const Napi::CallbackInfo& info) {
  const float* dy = F32(info[0], "dy");
  const float* x = F32(info[1], "x");
  float* dx = F32(info[2], "dx");
  int64_t n = int64_t(Length(info[0]));
  Check(info.Env(), Length(info[1]) == size_t(n) && Length(info[2]) == size_t(n),
        "reluGrad: sizes");
#pragma omp parallel for simd if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) dx[i] = x[i] > 0.f ? dy[i] : 0.f;
  return info.Env().Undefined();
}

enum BinaryOp { kAdd = 0, kSub = 1, kMul = 2, kDiv = 3 };

template <int Op>
inline float Apply(float a, float b) {
  if (Op == kAdd) return a + b;
  if (Op == kSub) return a - b;
  if (Op == kMul) return a * b;
  return a / b;
}

// out[r, c] = a[ai] op b[bi]: `modeA`/`modeB` say how each side is indexed:
// 0 full (r·inner + c), 1 scalar, 2 a vector over the inner axis (c).
template <int Op>
void BinaryLoop(const float* a, const float* b, float* out, int64_t rows, int64_t inner,
                int modeA, int modeB) {
  int64_t n = rows * inner;
  if (modeA == 0 && modeB == 0) {
#pragma omp parallel for simd if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) out[i] = Apply<Op>(a[i], b[i]);
  } else if (modeA == 0 && modeB == 1) {
    float s = b[0];
#pragma omp parallel for simd if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) out[i] = Apply<Op>(a[i], s);
  } else if (modeA == 1 && modeB == 0) {
    float s = a[0];
#pragma omp parallel for simd if (n >= kParallelMin)
    for (int64_t i = 0; i < n; ++i) out[i] = Apply<Op>(s, b[i]);
  } else {
#pragma omp parallel for if (n >= kParallelMin)
    for (int64_t r = 0; r < rows; ++r) {
      float* o = out + r * inner;
      const float* ar = modeA == 0 ? a + r * inner : a;
      const float* br = modeB == 0 ? b + r * inner : b;
      int64_t sa = modeA == 1 ? 0 : 1;
      int64_t sb = modeB == 1 ? 0 : 1;
      for (int64_t c = 0; c < inner; ++c) o[c] = Apply<Op>(ar[c * sa], br[c * sb]);
    }
  }
}

// binary(op, a, b, out, rows, inner, modeA, modeB)
Napi::Value Binary(const Napi::CallbackInfo& info) {
  int op = info[0].As<Napi::Number>().Int32Value();
  const float* a = F32(info[1], "a");
  const float* b = F32(info[2], "b");
  float* out = F32(info[3], "out");
  int64_t rows = info[4].As<Napi::Number>().Int64Value();
  int64_t inner = info[5].As<Napi::Number>().Int64Value();
  int modeA = info[6].As<Napi::Number>().Int32Value();
  int modeB = info[7].As<Napi::Number>().Int32Value();
  auto expect = [&](int mode) {
    return mode == 0 ? size_t(rows * inner) : mode == 1 ? 1 : size_t(inner);
  };
  Check(info.Env(),
        Length(info[1]) == expect(modeA) && Length(info[2]) == expect(modeB) &&
            Length(info[3]) == size_t(rows * inner),
        "binary: sizes");
  switch (op) {
    case kAdd: BinaryLoop<kAdd>(a, b, out, rows, inner, modeA, modeB); break;
    case kSub: BinaryLoop<kSub>(a, b, out, rows, inner, modeA, modeB); break;
    case kMul: BinaryLoop<kMul>(a, b, out, rows, inner, modeA, modeB); break;
    case kDiv: BinaryLoop<kDiv>(a, b, out, rows, inner, modeA, modeB); break;
    default: throw Napi::RangeError::New(info.Env(), "binary: unknown op");
  }
  return info.Env().Undefined();
}

// sum(x, out, outer, reduced, inner): out[o, i] = Σ_r x[o, r, i].
Napi::Value Sum(const Napi::CallbackInfo& info) {
  const float* x = F32(info[0], "x");
  float* out = F32(info[1], "out");
  int64_t outer = info[2].As<Napi::Number>().Int64Value();
  int64_t reduced = info[3].As<Napi::Number>().Int64Value();
  int64_t inner = info[4].As<Napi::Number>().Int64Value();
  Check(info.Env(),
        Length(info[0]) == size_t(outer * reduced * inner) &&
            Length(info[1]) == size_t(outer * inner),
        "sum: sizes");
  if (inner == 1) {
#pragma omp parallel for if (outer * reduced >= kParallelMin)
    for (int64_t o = 0; o < outer; ++o) {
      const float* row = x + o * reduced;
      float s = 0.f;
#pragma omp simd reduction(+ : s)
      for (int64_t r = 0; r < reduced; ++r) s += row[r];
      out[o] = s;
    }
    return info.Env().Undefined();
  }
  for (int64_t o = 0; o < outer; ++o) {
    std::vector<double> acc, unused;
    const float* block = x + o * reduced * inner;
    ReduceRows(reduced, inner, acc, unused, [&](int64_t r, double* s, double*) {
      const float* row = block + r * inner;
#pragma omp simd
      for (int64_t c = 0; c < inner; ++c) s[c] += row[c];
    });
    for (int64_t c = 0; c < inner; ++c) out[o * inner + c] = float(acc[c]);
  }
  return info.Env().Undefined();
}

// pad(x, out, shape, before, after, value): constant padding of any rank;
// each innermost row of x is copied whole into the filled output.
Napi::Value Pad(const Napi::CallbackInfo& info) {
  const float* x = F32(info[0], "x");
  float* out = F32(info[1], "out");
  auto shapeArray = info[2].As<Napi::Array>();
  size_t rank = shapeArray.Length();
  auto shape = Ints(info[2], rank, "shape");
  auto before = Ints(info[3], rank, "before");
  auto after = Ints(info[4], rank, "after");
  float value = info[5].As<Napi::Number>().FloatValue();
  Check(info.Env(), rank >= 1, "pad: rank 0");
  std::vector<int64_t> outShape(rank), outStride(rank);
  int64_t inSize = 1, outSize = 1;
  for (size_t d = 0; d < rank; ++d) {
    outShape[d] = before[d] + shape[d] + after[d];
    inSize *= shape[d];
    outSize *= outShape[d];
  }
  Check(info.Env(), Length(info[0]) == size_t(inSize) && Length(info[1]) == size_t(outSize),
        "pad: sizes");
  int64_t stride = 1;
  for (size_t d = rank; d-- > 0;) {
    outStride[d] = stride;
    stride *= outShape[d];
  }
  std::fill(out, out + outSize, value);
  int64_t rowLength = shape[rank - 1];
  int64_t rows = rowLength == 0 ? 0 : inSize / rowLength;
#pragma omp parallel for if (inSize >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t rest = r, offset = before[rank - 1];
    for (size_t d = rank - 1; d-- > 0;) {
      offset += (rest % shape[d] + before[d]) * outStride[d];
      rest /= shape[d];
    }
    std::memcpy(out + offset, x + r * rowLength, sizeof(float) * size_t(rowLength));
  }
  return info.Env().Undefined();
}

// adam(value, m, v, gradient, [beta1, 1 − beta1, beta2, 1 − beta2,
//      1 − beta1^t, 1 − beta2^t, epsilon, −learningRate]): one Adam step in
// place, in float32 and in the order of TensorFlow.js's AdamOptimizer, so the
// result matches its chain of element-wise ops.
Napi::Value Adam(const Napi::CallbackInfo& info) {
  float* value = F32(info[0], "value");
  float* m = F32(info[1], "m");
  float* v = F32(info[2], "v");
  const float* g = F32(info[3], "gradient");
  auto arr = info[4].As<Napi::Array>();
  float k[8];
  for (uint32_t i = 0; i < 8; ++i) k[i] = arr.Get(i).As<Napi::Number>().FloatValue();
  int64_t n = int64_t(Length(info[0]));
  Check(info.Env(),
        Length(info[1]) == size_t(n) && Length(info[2]) == size_t(n) &&
            Length(info[3]) == size_t(n),
        "adam: sizes");
  const float b1 = k[0], c1 = k[1], b2 = k[2], c2 = k[3], a1 = k[4], a2 = k[5], eps = k[6],
              negLr = k[7];
#pragma omp parallel for simd if (n >= kParallelMin)
  for (int64_t i = 0; i < n; ++i) {
    float gi = g[i];
    float mi = m[i] * b1 + gi * c1;
    float vi = v[i] * b2 + (gi * gi) * c2;
    m[i] = mi;
    v[i] = vi;
    float mh = mi / a1;
    float vh = vi / a2;
    value[i] = (mh / (std::sqrt(vh) + eps)) * negLr + value[i];
  }
  return info.Env().Undefined();
}

// ---------------------------------------------------------------------------
// Process-wide settings and counters.

// setThreads(n): the OpenMP threads oneDNN and the loops here use.
Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  int n = info[0].As<Napi::Number>().Int32Value();
  if (n < 1) throw Napi::RangeError::New(info.Env(), "setThreads: need at least 1 thread");
  omp_set_num_threads(n);
  return info.Env().Undefined();
}

// configure({ winograd?, bf16? }): how convolutions run from now on (see Mode).
Napi::Value Configure(const Napi::CallbackInfo& info) {
  auto options = info[0].As<Napi::Object>();
  if (options.Has("winograd")) settings.winograd = options.Get("winograd").ToBoolean();
  if (options.Has("bf16")) settings.bf16 = options.Get("bf16").ToBoolean();
  auto out = Napi::Object::New(info.Env());
  out.Set("winograd", settings.winograd);
  out.Set("bf16", settings.bf16);
  return out;
}

// info(): version, threads, and the counted native memory.
Napi::Value Info(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  auto out = Napi::Object::New(env);
  const dnnl_version_t* v = dnnl_version();
  out.Set("version", std::to_string(v->major) + "." + std::to_string(v->minor) + "." +
                         std::to_string(v->patch));
  out.Set("threads", omp_get_max_threads());
  out.Set("bytes", double(stats.bytes));
  out.Set("buffers", double(stats.buffers));
  out.Set("primitives", double(stats.primitives));
  return out;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("conv2dForward", Napi::Function::New(env, Guarded<Conv2dForward>));
  exports.Set("conv2dBackwardData", Napi::Function::New(env, Guarded<Conv2dBackwardData>));
  exports.Set("conv2dBackwardFilter", Napi::Function::New(env, Guarded<Conv2dBackwardFilter>));
  exports.Set("poolForward", Napi::Function::New(env, Guarded<PoolForwardFn>));
  exports.Set("poolBackward", Napi::Function::New(env, Guarded<PoolBackwardFn>));
  exports.Set("matMul", Napi::Function::New(env, Guarded<MatMul>));
  exports.Set("batchNormTrain", Napi::Function::New(env, Guarded<BatchNormTrain>));
  exports.Set("batchNormTrainGrad", Napi::Function::New(env, Guarded<BatchNormTrainGrad>));
  exports.Set("batchNormInfer", Napi::Function::New(env, Guarded<BatchNormInfer>));
  exports.Set("relu", Napi::Function::New(env, Guarded<Relu>));
  exports.Set("reluGrad", Napi::Function::New(env, Guarded<ReluGrad>));
  exports.Set("binary", Napi::Function::New(env, Guarded<Binary>));
  exports.Set("sum", Napi::Function::New(env, Guarded<Sum>));
  exports.Set("adam", Napi::Function::New(env, Guarded<Adam>));
  exports.Set("pad", Napi::Function::New(env, Guarded<Pad>));
  exports.Set("forgetWeights", Napi::Function::New(env, Guarded<ForgetWeights>));
  exports.Set("setThreads", Napi::Function::New(env, Guarded<SetThreads>));
  exports.Set("configure", Napi::Function::New(env, Guarded<Configure>));
  exports.Set("info", Napi::Function::New(env, Guarded<Info>));
  return exports;
}

}  // namespace

NODE_API_MODULE(onednn_backend, Init)
