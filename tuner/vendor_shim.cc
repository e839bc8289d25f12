// Vendor kernels for tunefarm's CUDA libraries: cuDNN convolutions and cuBLASLt matmuls with
// their epilogues (bias, residual, ReLU), and depthwise convolutions of our own
// (vendor_depthwise.cu), called from the Relax graph through call_dps_packed.
//
// This file is compiled on the machine that builds a library and linked into the exported .so,
// so the library carries its vendor calls itself (a Python callback would keep only its name).
// The Relax VM finds each function as the symbol __tvm_ffi_<name> of the library.
//
// Calls run on TVM's current stream, so they are captured into the library's CUDA graph. The VM
// runs every captured region once before it captures it; that first call builds and caches the
// plan (descriptors, the algorithm timed fastest, the workspace), so nothing is allocated or
// timed while a graph is being captured.

#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <cudnn.h>
#include <tvm/ffi/container/shape.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/error.h>
#include <tvm/ffi/extra/c_env_api.h>
#include <tvm/ffi/function.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <sstream>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#ifdef TUNEFARM_CUDNN_FRONTEND
// cuDNN's graph API through its header-only frontend (nvidia-cudnn-frontend): the engines its
// heuristics offer include the Hopper kernels (sm90_xmma) that the legacy API does not reach
// for most of ResNet-50's convolutions.
#include <cudnn_frontend.h>
#endif

// vendor_depthwise.cu, compiled by nvcc; returns a cudaError_t.
extern "C" int tunefarm_depthwise_launch(const void* x, const void* w, const void* bias, void* y,
                                         int is_half, const int* dims, int act_in, int act_out,
                                         int vector_bytes, void* stream);

// vendor_attention.cu, compiled by nvcc; the launch returns a cudaError_t.
extern "C" size_t tunefarm_attention_shared_bytes(int sk, int d, int variant);
extern "C" int tunefarm_attention_launch(const void* q, const void* k, const void* v,
                                         const void* mask, void* out, const int* shape,
                                         const int64_t* strides, int mask_bits, float scale,
                                         int variant, void* stream);

// vendor_layer_norm.cu, compiled by nvcc; the launch returns a cudaError_t.
extern "C" int tunefarm_add_layer_norm_max_cols();
extern "C" int tunefarm_add_layer_norm_launch(const void* x, int x_half, const void* residual,
                                              const void* gamma, const void* beta, void* y,
                                              void* y_half, int64_t rows, int cols,
                                              float epsilon, int variant, void* stream);

namespace tunefarm_vendor {

using tvm::ffi::Shape;
using tvm::ffi::TensorView;

#define TF_CHECK_CUDA(call)                                                          \
  do {                                                                               \
    cudaError_t status_ = (call);                                                    \
    if (status_ != cudaSuccess)                                                      \
      TVM_FFI_THROW(RuntimeError) << #call << ": " << cudaGetErrorString(status_);   \
  } while (0)

#define TF_CHECK_CUDNN(call)                                                         \
  do {                                                                               \
    cudnnStatus_t status_ = (call);                                                  \
    if (status_ != CUDNN_STATUS_SUCCESS)                                             \
      TVM_FFI_THROW(RuntimeError) << #call << ": " << cudnnGetErrorString(status_);  \
  } while (0)

#define TF_CHECK_CUBLAS(call)                                                        \
  do {                                                                               \
    cublasStatus_t status_ = (call);                                                 \
    if (status_ != CUBLAS_STATUS_SUCCESS)                                            \
      TVM_FFI_THROW(RuntimeError) << #call << ": cuBLAS status " << int(status_);    \
  } while (0)

// One workspace per device for every vendor call. It is allocated once and never freed or
// grown: a captured graph keeps the address it saw.
constexpr size_t kWorkspaceBytes = size_t(64) << 20;

struct DeviceState {
  cudnnHandle_t cudnn = nullptr;
  cublasLtHandle_t cublaslt = nullptr;
  void* workspace = nullptr;
  cudaStream_t timing = nullptr;  // where candidates are captured and timed
};

std::mutex g_mutex;
std::map<int, DeviceState> g_devices;

cudaStream_t CurrentStream(int device) {
  return static_cast<cudaStream_t>(TVMFFIEnvGetStream(kDLCUDA, device));
}

bool Capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  TF_CHECK_CUDA(cudaStreamIsCapturing(stream, &status));
  return status != cudaStreamCaptureStatusNone;
}

// Must be called with g_mutex held.
DeviceState& State(int device, cudaStream_t stream) {
  DeviceState& state = g_devices[device];
  if (state.workspace == nullptr) {
    if (Capturing(stream)) {
      TVM_FFI_THROW(RuntimeError) << "tunefarm vendor kernels: first call inside a CUDA graph "
                                     "capture; the library must run once before it is captured";
    }
    TF_CHECK_CUDNN(cudnnCreate(&state.cudnn));
    TF_CHECK_CUBLAS(cublasLtCreate(&state.cublaslt));
    TF_CHECK_CUDA(cudaMalloc(&state.workspace, kWorkspaceBytes));
    TF_CHECK_CUDA(cudaStreamCreateWithFlags(&state.timing, cudaStreamNonBlocking));
  }
  return state;
}

void* Data(const TensorView& t) {
  return static_cast<char*>(t.data_ptr()) + t.byte_offset();
}

// TUNEFARM_VENDOR_LOG=1: each plan's candidates and their times go to stderr.
bool Logging() {
  static const bool on = [] {
    const char* value = std::getenv("TUNEFARM_VENDOR_LOG");
    return value != nullptr && value[0] == '1';
  }();
  return on;
}

// GPU ms of one call of `run(stream)`, or -1 where the call is refused. One call warms up and
// tells whether it is accepted; then kRuns calls are captured into one CUDA graph and the graph
// is timed. Timed call by call, the host's work was the time: cuDNN's fused call takes ~50 us of
// host time, longer than most of ResNet-50's kernels, and the choice among candidates was noise
// (bench/results/vendor_profile-h100-20261206T092417Z.json). The model replays its calls in a
// CUDA graph, where only the GPU's time counts.
template <typename Run>
float TimeOnGpu(cudaStream_t stream, Run run) {
  constexpr int kRuns = 10;
  if (!run(stream)) return -1.0f;
  TF_CHECK_CUDA(cudaStreamSynchronize(stream));
  cudaGraph_t graph = nullptr;
  TF_CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  bool ok = true;
  for (int i = 0; i < kRuns && ok; ++i) ok = run(stream);
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  if (!ok || ended != cudaSuccess || graph == nullptr) {
    if (graph != nullptr) cudaGraphDestroy(graph);
    cudaGetLastError();  // the failed capture's error is this candidate's, not the next call's
    return -1.0f;
  }
  cudaGraphExec_t exec = nullptr;
  TF_CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  cudaEvent_t start, stop;
  TF_CHECK_CUDA(cudaEventCreate(&start));
  TF_CHECK_CUDA(cudaEventCreate(&stop));
  TF_CHECK_CUDA(cudaGraphLaunch(exec, stream));  // warm-up
  TF_CHECK_CUDA(cudaEventRecord(start, stream));
  TF_CHECK_CUDA(cudaGraphLaunch(exec, stream));
  TF_CHECK_CUDA(cudaEventRecord(stop, stream));
  TF_CHECK_CUDA(cudaEventSynchronize(stop));
  float ms = 0.0f;
  TF_CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cudaGraphExecDestroy(exec);
  cudaGraphDestroy(graph);
  return ms / kRuns;
}

bool IsHalf(DLDataType dtype) { return dtype.code == kDLFloat && dtype.bits == 16; }
bool IsFloat(DLDataType dtype) { return dtype.code == kDLFloat && dtype.bits == 32; }

void CheckDtype(const TensorView& t, DLDataType expected, const char* what) {
  if (t.dtype().code != expected.code || t.dtype().bits != expected.bits) {
    TVM_FFI_THROW(TypeError) << "tunefarm vendor kernels: " << what
                             << " must have the input's dtype";
  }
}

// The fastest of `candidates` for a call with no plan yet (our kernels' widths or launch
// variants), each timed on the GPU by TimeOnGpu on the device's timing stream; `log(candidate,
// ms)` prints it under TUNEFARM_VENDOR_LOG=1. Called with g_mutex held; `what` names the call in
// the error a call inside a CUDA graph capture gets.
template <typename Run, typename Log>
int FastestCandidate(const char* what, int device, cudaStream_t stream,
                     const std::vector<int>& candidates, Run run, Log log) {
  if (Capturing(stream)) {
    TVM_FFI_THROW(RuntimeError) << what << ": no plan for a call inside a CUDA graph capture";
  }
  DeviceState& state = State(device, stream);
  TF_CHECK_CUDA(cudaStreamSynchronize(stream));  // the inputs, ready for the timing stream
  float best_ms = -1.0f;
  int best = *candidates.begin();
  for (int candidate : candidates) {
    const float ms = TimeOnGpu(state.timing, [&](cudaStream_t on) { return run(candidate, on); });
    if (Logging()) log(candidate, ms);
    if (ms >= 0 && (best_ms < 0 || ms < best_ms)) {
      best_ms = ms;
      best = candidate;
    }
  }
  return best;
}

// The variants the environment variable `env` names, comma-separated ("2", "0,1,2,3"), each
// below `count`; none where it is unset or empty, or `env` is null.
std::vector<int> VariantsNamedBy(const char* env, int count) {
  std::vector<int> variants;
  const char* text = env != nullptr ? std::getenv(env) : nullptr;
  if (text == nullptr || text[0] == '\0') return variants;
  const std::string all(text);
  size_t start = 0;
  while (start <= all.size()) {
    const size_t comma = std::min(all.find(',', start), all.size());
    std::string item = all.substr(start, comma - start);
    const size_t first = item.find_first_not_of(' ');
    const size_t last = item.find_last_not_of(' ');
    item = first == std::string::npos ? "" : item.substr(first, last - first + 1);
    const bool number = !item.empty() && item.size() <= 3 &&
                        item.find_first_not_of("0123456789") == std::string::npos;
    const int variant = number ? std::atoi(item.c_str()) : -1;
    if (variant < 0 || variant >= count) {
      TVM_FFI_THROW(ValueError) << env << "=" << text << ": expected launch variants from 0 to "
                                << count - 1 << ", such as 1 or 0,1";
    }
    variants.push_back(int(variant));
    start = comma + 1;
  }
  return variants;
}

// The launch variant for `key` on `device`: the fastest of `candidates`, or of the variants the
// environment variable `env` names instead (TUNEFARM_ATTENTION_VARIANT=0,1,2,3; it may name 0 to
// `variants` - 1), timed once per key; a single variant, named or not, is taken untimed
// (TUNEFARM_ATTENTION_VARIANT=1 forces it). `plan(pool)` runs once per key before the first
// launch, with the variants to choose from. Called with g_mutex held.
template <typename Plan, typename Run, typename Log>
int ChosenVariant(std::map<std::vector<int64_t>, int>& chosen, std::vector<int64_t> key,
                  const char* what, const char* env, int variants, int device,
                  cudaStream_t stream, const std::vector<int>& candidates, Plan plan, Run run,
                  Log log) {
  const std::vector<int> named = VariantsNamedBy(env, variants);
  const std::vector<int>& pool = named.empty() ? candidates : named;
  // The named variants are part of the key: each choice among other variants is made anew.
  key.push_back(device);
  key.insert(key.end(), named.begin(), named.end());
  key.push_back(int64_t(named.size()));
  auto it = chosen.find(key);
  if (it == chosen.end()) {
    plan(pool);
    const int best = pool.size() == 1 ? pool.front()
                                      : FastestCandidate(what, device, stream, pool,
                                                         [&](int variant, cudaStream_t on) {
                                                           return run(variant, on) == cudaSuccess;
                                                         },
                                                         log);
    it = chosen.emplace(std::move(key), best).first;
  }
  return it->second;
}

// ---------------------------------------------------------------------------------------------
// Convolution: y = act(conv(x, w) + bias [+ z]), NHWC data, OHWI (KRSC) weights.

// config: stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, relu, has_residual,
// plain, tf32. A plain call is the convolution alone (cudnnConvolutionForward; bias, residual
// and activation are left to the graph): cuDNN's fused call takes fewer of its fast kernels.
// tf32 lets an fp32 convolution run on the tensor cores in TF32, as torch's cuDNN does by
// default (torch.backends.cudnn.allow_tf32).
constexpr int kConvConfigSize = 11;

struct ConvPlan {
  bool plain = false;
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, bias = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnActivationDescriptor_t act = nullptr;
  cudnnConvolutionFwdAlgo_t algo = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM;
  size_t workspace = 0;
};

using ConvKey = std::vector<int64_t>;

// fp32 convolutions stay fp32 unless the call asks for TF32: the default math type lets cuDNN
// use TF32 on Ampere and later, where TVM's kernels are true fp32.
cudnnMathType_t Fp32Math(bool tf32) { return tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH; }
std::map<ConvKey, ConvPlan> g_conv_plans;

cudnnStatus_t RunConv(DeviceState& state, const ConvPlan& plan, const TensorView& x,
                      const TensorView& w, const TensorView& bias, const TensorView& z,
                      bool has_residual, const TensorView& y) {
  const float one = 1.0f;
  if (plan.plain) {
    const float zero = 0.0f;
    return cudnnConvolutionForward(state.cudnn, &one, plan.x, Data(x), plan.w, Data(w), plan.conv,
                                   plan.algo, state.workspace, plan.workspace, &zero, plan.y,
                                   Data(y));
  }
  const float residual_scale = has_residual ? 1.0f : 0.0f;
  // With no residual, z is y itself and is scaled by zero, as cuDNN documents for that case.
  return cudnnConvolutionBiasActivationForward(
      state.cudnn, &one, plan.x, Data(x), plan.w, Data(w), plan.conv, plan.algo,
      state.workspace, plan.workspace, &residual_scale, plan.y, has_residual ? Data(z) : Data(y),
      plan.bias, Data(bias), plan.act, plan.y, Data(y));
}

ConvPlan MakeConvPlan(DeviceState& state, cudaStream_t stream, const TensorView& x,
                      const TensorView& w, const TensorView& bias, const TensorView& z,
                      const int64_t* cfg, const TensorView& y) {
  const bool half = IsHalf(x.dtype());
  const cudnnDataType_t data_type = half ? CUDNN_DATA_HALF : CUDNN_DATA_FLOAT;
  const bool relu = cfg[7] != 0, has_residual = cfg[8] != 0, tf32 = cfg[10] != 0;
  const cudnnMathType_t math = half ? CUDNN_TENSOR_OP_MATH : Fp32Math(tf32);
  ConvPlan plan;
  plan.plain = cfg[9] != 0;
  TF_CHECK_CUDNN(cudnnCreateTensorDescriptor(&plan.x));
  TF_CHECK_CUDNN(cudnnCreateTensorDescriptor(&plan.y));
  TF_CHECK_CUDNN(cudnnCreateTensorDescriptor(&plan.bias));
  TF_CHECK_CUDNN(cudnnCreateFilterDescriptor(&plan.w));
  TF_CHECK_CUDNN(cudnnCreateConvolutionDescriptor(&plan.conv));
  TF_CHECK_CUDNN(cudnnCreateActivationDescriptor(&plan.act));
  TF_CHECK_CUDNN(cudnnSetTensor4dDescriptor(plan.x, CUDNN_TENSOR_NHWC, data_type, x.size(0),
                                            x.size(3), x.size(1), x.size(2)));
  TF_CHECK_CUDNN(cudnnSetTensor4dDescriptor(plan.y, CUDNN_TENSOR_NHWC, data_type, y.size(0),
                                            y.size(3), y.size(1), y.size(2)));
  TF_CHECK_CUDNN(
      cudnnSetTensor4dDescriptor(plan.bias, CUDNN_TENSOR_NHWC, data_type, 1, y.size(3), 1, 1));
  TF_CHECK_CUDNN(cudnnSetFilter4dDescriptor(plan.w, data_type, CUDNN_TENSOR_NHWC, w.size(0),
                                            w.size(3), w.size(1), w.size(2)));
  TF_CHECK_CUDNN(cudnnSetConvolution2dDescriptor(
      plan.conv, static_cast<int>(cfg[2]), static_cast<int>(cfg[3]), static_cast<int>(cfg[0]),
      static_cast<int>(cfg[1]), static_cast<int>(cfg[4]), static_cast<int>(cfg[5]),
      CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
  TF_CHECK_CUDNN(cudnnSetConvolutionGroupCount(plan.conv, static_cast<int>(cfg[6])));
  TF_CHECK_CUDNN(cudnnSetActivationDescriptor(
      plan.act, relu ? CUDNN_ACTIVATION_RELU : CUDNN_ACTIVATION_IDENTITY, CUDNN_NOT_PROPAGATE_NAN,
      0.0));
  TF_CHECK_CUDNN(cudnnSetStream(state.cudnn, stream));

  // The candidates are cuDNN's algorithms for the plain convolution; each is then timed in the
  // fused call that will really run, and the fastest that cuDNN accepts is kept. (cuDNN takes
  // only IMPLICIT_PRECOMP_GEMM for the identity activation.)
  std::vector<std::pair<cudnnConvolutionFwdAlgo_t, cudnnMathType_t>> candidates;
  if (relu || plan.plain) {
    // fp16 reaches the tensor cores only with TENSOR_OP_MATH: under the default math type
    // cuDNN offers its old CUDA-core kernels (implicit_convolve_sgemm) and NCHW fp32 detours.
    // TF32 candidates are asked for under both math types that allow it; which wins is then
    // measured on the GPU (TimeOnGpu). The CUDA-core engine that fp32 ResNet-50 once got for 8
    // of its 20 convolutions came from timing on the host, not from this list
    // (bench/results/vendor_profile-h100-20261206T092708Z.json).
    std::vector<cudnnMathType_t> asked{math};
    if (tf32 && !half) asked.push_back(CUDNN_TENSOR_OP_MATH);
    for (cudnnMathType_t ask : asked) {
      TF_CHECK_CUDNN(cudnnSetConvolutionMathType(plan.conv, ask));
      std::array<cudnnConvolutionFwdAlgoPerf_t, CUDNN_CONVOLUTION_FWD_ALGO_COUNT> found{};
      int count = 0;
      TF_CHECK_CUDNN(cudnnFindConvolutionForwardAlgorithmEx(
          state.cudnn, plan.x, Data(x), plan.w, Data(w), plan.conv, plan.y, Data(y),
          static_cast<int>(found.size()), &count, found.data(), state.workspace,
          kWorkspaceBytes));
      for (int i = 0; i < count; ++i) {
        if (found[i].status == CUDNN_STATUS_SUCCESS && found[i].memory <= kWorkspaceBytes &&
            (half || tf32 || found[i].mathType == CUDNN_FMA_MATH)) {
          candidates.emplace_back(found[i].algo, found[i].mathType);
        }
      }
    }
  }
  if (!plan.plain && !relu) {
    // The identity activation runs with IMPLICIT_PRECOMP_GEMM only.
    candidates.emplace_back(CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, math);
  }

  // The candidates run on the timing stream: the inputs must be ready there.
  TF_CHECK_CUDA(cudaStreamSynchronize(stream));
  float best_ms = -1.0f;
  cudnnConvolutionFwdAlgo_t best_algo = plan.algo;
  cudnnMathType_t best_math = CUDNN_DEFAULT_MATH;
  size_t best_workspace = 0;
  for (const auto& [algo, math] : candidates) {
    TF_CHECK_CUDNN(cudnnSetConvolutionMathType(plan.conv, math));
    size_t bytes = 0;
    if (cudnnGetConvolutionForwardWorkspaceSize(state.cudnn, plan.x, plan.w, plan.conv, plan.y,
                                                algo, &bytes) != CUDNN_STATUS_SUCCESS ||
        bytes > kWorkspaceBytes) {
      continue;
    }
    plan.algo = algo;
    plan.workspace = bytes;
    // cuDNN may refuse this algorithm in the fused call: TimeOnGpu then gives -1.
    const float ms = TimeOnGpu(state.timing, [&](cudaStream_t on) {
      return cudnnSetStream(state.cudnn, on) == CUDNN_STATUS_SUCCESS &&
             RunConv(state, plan, x, w, bias, z, has_residual, y) == CUDNN_STATUS_SUCCESS;
    });
    if (Logging()) {
      std::fprintf(stderr,
                   "tunefarm conv x %ldx%ldx%ldx%ld w %ldx%ldx%ldx%ld: algo %d math %d: %.4f ms\n",
                   long(x.size(0)), long(x.size(1)), long(x.size(2)), long(x.size(3)),
                   long(w.size(0)), long(w.size(1)), long(w.size(2)), long(w.size(3)), int(algo),
                   int(math), ms);
    }
    if (ms >= 0 && (best_ms < 0 || ms < best_ms)) {
      best_ms = ms;
      best_algo = algo;
      best_math = math;
      best_workspace = bytes;
    }
  }
  if (best_ms < 0) {
    TVM_FFI_THROW(RuntimeError) << "tunefarm vendor kernels: cuDNN has no algorithm for this "
                                   "convolution";
  }
  // The math type is a property of the descriptor, which the loop left at the last candidate's.
  TF_CHECK_CUDNN(cudnnSetConvolutionMathType(plan.conv, best_math));
  plan.algo = best_algo;
  plan.workspace = best_workspace;
  return plan;
}

#ifdef TUNEFARM_CUDNN_FRONTEND
namespace fe = cudnn_frontend;

enum Uid : int64_t { kX = 1, kW, kBias, kResidual, kY };

// One graph per shape: conv_fprop, then the bias add, the residual add and the ReLU as
// pointwise nodes cuDNN fuses into the convolution's epilogue. nullptr: cuDNN has no engine
// for it, and the legacy path runs the call.
std::map<ConvKey, std::shared_ptr<fe::graph::Graph>> g_graphs;

std::shared_ptr<fe::graph::Tensor_attributes> Nhwc(fe::graph::Graph& graph, const char* name,
                                                   int64_t uid, int64_t n, int64_t c, int64_t h,
                                                   int64_t w) {
  return graph.tensor(fe::graph::Tensor_attributes()
                          .set_name(name)
                          .set_uid(uid)
                          .set_dim({n, c, h, w})
                          .set_stride({h * w * c, 1, w * c, c}));
}

std::unordered_map<int64_t, void*> VariantPack(const TensorView& x, const TensorView& w,
                                               const TensorView& bias, const TensorView& z,
                                               bool has_residual, const TensorView& y) {
  std::unordered_map<int64_t, void*> pack{
      {kX, Data(x)}, {kW, Data(w)}, {kBias, Data(bias)}, {kY, Data(y)}};
  if (has_residual) pack[kResidual] = Data(z);
  return pack;
}

std::shared_ptr<fe::graph::Graph> MakeGraph(DeviceState& state, const TensorView& x,
                                            const TensorView& w, const TensorView& bias,
                                            const TensorView& z, const int64_t* cfg,
                                            const TensorView& y) {
  const bool relu = cfg[7] != 0, has_residual = cfg[8] != 0;
  const auto fp32 = fe::DataType_t::FLOAT;
  const auto io = IsHalf(x.dtype()) ? fe::DataType_t::HALF : fp32;
  auto graph = std::make_shared<fe::graph::Graph>();
  graph->set_io_data_type(io)
      .set_intermediate_data_type(fe::DataType_t::FLOAT)
      .set_compute_data_type(fe::DataType_t::FLOAT);
  auto in = Nhwc(*graph, "x", kX, x.size(0), x.size(3), x.size(1), x.size(2));
  auto weight = Nhwc(*graph, "w", kW, w.size(0), w.size(3), w.size(1), w.size(2));
  auto out = graph->conv_fprop(in, weight,
                               fe::graph::Conv_fprop_attributes()
                                   .set_stride({cfg[0], cfg[1]})
                                   .set_padding({cfg[2], cfg[3]})
                                   .set_dilation({cfg[4], cfg[5]}));
  const int64_t k = y.size(3);
  auto add = fe::graph::Pointwise_attributes().set_mode(fe::PointwiseMode_t::ADD);
  out = graph->pointwise(out, Nhwc(*graph, "bias", kBias, 1, k, 1, 1), add);
  if (has_residual) {
    auto residual = Nhwc(*graph, "z", kResidual, y.size(0), k, y.size(1), y.size(2));
    out = graph->pointwise(out, residual, add);
  }
  if (relu) {
    out = graph->pointwise(out,
                           fe::graph::Pointwise_attributes().set_mode(fe::PointwiseMode_t::RELU_FWD));
  }
  out->set_output(true)
      .set_uid(kY)
      .set_data_type(io)
      .set_dim({y.size(0), k, y.size(1), y.size(2)})
      .set_stride({y.size(1) * y.size(2) * k, 1, y.size(2) * k, k});
  if (graph->validate().is_bad() || graph->build_operation_graph(state.cudnn).is_bad() ||
      graph->create_execution_plans({fe::HeurMode_t::A, fe::HeurMode_t::FALLBACK}).is_bad()) {
    return nullptr;
  }
  // Autotuning runs every plan on the one workspace: none may need more than it has.
  graph->deselect_workspace_greater_than(static_cast<int64_t>(kWorkspaceBytes));
  if (io == fp32 && cfg[10] == 0) {
    // fp32 on tensor cores is TF32: unless the call allows it, fp32 stays true fp32.
    graph->deselect_numeric_notes({fe::NumericalNote_t::TENSOR_CORE});
  }
  if (graph->check_support(state.cudnn).is_bad() ||
      graph->build_plans(state.cudnn, fe::BuildPlanPolicy_t::ALL).is_bad()) {
    return nullptr;
  }
  int64_t workspace = 0;
  if (graph->get_workspace_size(workspace).is_bad() ||
      workspace > static_cast<int64_t>(kWorkspaceBytes)) {
    return nullptr;
  }
  auto pack = VariantPack(x, w, bias, z, has_residual, y);
  // Times every plan that fits and keeps the fastest as the graph's candidate.
  if (graph->autotune(state.cudnn, pack, state.workspace).is_bad()) return nullptr;
  if (graph->get_workspace_size(workspace).is_bad() ||
      workspace > static_cast<int64_t>(kWorkspaceBytes)) {
    return nullptr;
  }
  return graph;
}
#endif

void Conv2d(TensorView x, TensorView w, TensorView bias, TensorView z, Shape config,
            TensorView y) {
  if (config.size() != kConvConfigSize) {
    TVM_FFI_THROW(ValueError) << "tunefarm_cudnn_conv2d: config needs " << kConvConfigSize
                              << " values";
  }
  if (x.ndim() != 4 || w.ndim() != 4 || y.ndim() != 4) {
    TVM_FFI_THROW(ValueError) << "tunefarm_cudnn_conv2d: NHWC data and OHWI weights expected";
  }
  if (!IsHalf(x.dtype()) && !IsFloat(x.dtype())) {
    TVM_FFI_THROW(TypeError) << "tunefarm_cudnn_conv2d: float16 or float32 only";
  }
  CheckDtype(w, x.dtype(), "the weight");
  CheckDtype(y, x.dtype(), "the output");
  CheckDtype(bias, x.dtype(), "the bias");
  const int device = x.device().device_id;
  TF_CHECK_CUDA(cudaSetDevice(device));
  cudaStream_t stream = CurrentStream(device);
  std::lock_guard<std::mutex> lock(g_mutex);
  DeviceState& state = State(device, stream);
  ConvKey key(config.begin(), config.end());
  for (int i = 0; i < 4; ++i) key.push_back(x.size(i));
  for (int i = 0; i < 4; ++i) key.push_back(w.size(i));
  key.push_back(x.dtype().bits);
  key.push_back(device);
#ifdef TUNEFARM_CUDNN_FRONTEND
  if (config[9] == 0) {
    auto graph_it = g_graphs.find(key);
    if (graph_it == g_graphs.end()) {
      if (Capturing(stream)) {
        TVM_FFI_THROW(RuntimeError) << "tunefarm_cudnn_conv2d: no plan for a call inside a "
                                       "CUDA graph capture";
      }
      TF_CHECK_CUDNN(cudnnSetStream(state.cudnn, stream));
      graph_it = g_graphs.emplace(key, MakeGraph(state, x, w, bias, z, config.data(), y)).first;
    }
    if (graph_it->second != nullptr) {
      TF_CHECK_CUDNN(cudnnSetStream(state.cudnn, stream));
      auto pack = VariantPack(x, w, bias, z, config[8] != 0, y);
      auto status = graph_it->second->execute(state.cudnn, pack, state.workspace);
      if (status.is_bad()) {
        TVM_FFI_THROW(RuntimeError) << "tunefarm_cudnn_conv2d: " << status.get_message();
      }
      return;
    }
  }
#endif
  auto it = g_conv_plans.find(key);
  if (it == g_conv_plans.end()) {
    if (Capturing(stream)) {
      TVM_FFI_THROW(RuntimeError) << "tunefarm_cudnn_conv2d: no plan for a call inside a CUDA "
                                     "graph capture";
    }
    it = g_conv_plans.emplace(key, MakeConvPlan(state, stream, x, w, bias, z, config.data(), y))
             .first;
  }
  TF_CHECK_CUDNN(cudnnSetStream(state.cudnn, stream));
  TF_CHECK_CUDNN(RunConv(state, it->second, x, w, bias, z, config[8] != 0, y));
}

// ---------------------------------------------------------------------------------------------
// Matmul: y[M, N] = x[M, K] @ w + bias [+ residual], then ReLU if asked. w is [K, N], or [N, K]
// when transposed. Row-major tensors are cuBLASLt's column-major transposes, so the product is
// computed as y^T = w^T x^T.

// config: transposed_w, relu, has_residual, tf32 (fp32 inputs rounded to TF32 on the tensor
// cores: CUBLAS_COMPUTE_32F_FAST_TF32)
constexpr int kMatmulConfigSize = 4;

struct MatmulPlan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  size_t workspace = 0;
};

std::map<std::vector<int64_t>, MatmulPlan> g_matmul_plans;

// TVM's allocations are 64-byte aligned, and views into them keep at least this: the
// heuristic is told so (its default assumes 256) and every call checks it.
constexpr uint32_t kMinAlignment = 16;

cublasStatus_t RunMatmul(DeviceState& state, const MatmulPlan& plan, cudaStream_t stream,
                         const void* x, const void* w, const void* residual, bool has_residual,
                         void* y) {
  const float one = 1.0f;
  const float residual_scale = has_residual ? 1.0f : 0.0f;
  return cublasLtMatmul(state.cublaslt, plan.desc, &one, w, plan.a, x, plan.b, &residual_scale,
                        has_residual ? residual : y, plan.c, y, plan.c, &plan.algo,
                        state.workspace, plan.workspace, stream);
}

// The heuristic's first few algorithms are timed on the call's own tensors and the fastest is
// kept: its first choice for TF32 was a split-K kernel with two extra kernels (the reduction and
// the epilogue) on ResNet-50's 1x1 convolutions.
constexpr int kMatmulCandidates = 8;

MatmulPlan MakeMatmulPlan(DeviceState& state, cudaStream_t stream, int64_t m, int64_t n,
                          int64_t k, bool half, bool transposed_w, bool relu, bool tf32,
                          const TensorView& x, const TensorView& w, const TensorView& bias,
                          const TensorView& residual, bool has_residual, const TensorView& y) {
  void* bias_pointer = Data(bias);
  const cudaDataType_t data_type = half ? CUDA_R_16F : CUDA_R_32F;
  MatmulPlan plan;
  const cublasComputeType_t compute =
      tf32 && !half ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
  TF_CHECK_CUBLAS(cublasLtMatmulDescCreate(&plan.desc, compute, CUDA_R_32F));
  const cublasOperation_t op_a = transposed_w ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = CUBLAS_OP_N;
  TF_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a,
                                                 sizeof(op_a)));
  TF_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b,
                                                 sizeof(op_b)));
  const cublasLtEpilogue_t epilogue = relu ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_BIAS;
  TF_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_EPILOGUE,
                                                 &epilogue, sizeof(epilogue)));
  // The heuristic reads the bias pointer's alignment from its value.
  TF_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                 &bias_pointer, sizeof(bias_pointer)));
  // A = w^T as stored: [N, K] column-major is w[K, N] row-major; transposed, w[N, K] row-major
  // is [K, N] column-major.
  if (transposed_w) {
    TF_CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&plan.a, data_type, k, n, k));
  } else {
    TF_CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&plan.a, data_type, n, k, n));
  }
  TF_CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&plan.b, data_type, k, m, k));
  TF_CHECK_CUBLAS(cublasLtMatrixLayoutCreate(&plan.c, data_type, n, m, n));

  cublasLtMatmulPreference_t preference;
  TF_CHECK_CUBLAS(cublasLtMatmulPreferenceCreate(&preference));
  const size_t workspace = kWorkspaceBytes;
  TF_CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(
      preference, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &workspace, sizeof(workspace)));
  for (auto attribute :
       {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
    TF_CHECK_CUBLAS(cublasLtMatmulPreferenceSetAttribute(preference, attribute, &kMinAlignment,
                                                         sizeof(kMinAlignment)));
  }
  std::array<cublasLtMatmulHeuristicResult_t, kMatmulCandidates> results{};
  int count = 0;
  TF_CHECK_CUBLAS(cublasLtMatmulAlgoGetHeuristic(state.cublaslt, plan.desc, plan.a, plan.b,
                                                 plan.c, plan.c, preference, kMatmulCandidates,
                                                 results.data(), &count));
  cublasLtMatmulPreferenceDestroy(preference);
  TF_CHECK_CUDA(cudaStreamSynchronize(stream));  // the inputs, ready for the timing stream
  float best_ms = -1.0f;
  cublasLtMatmulHeuristicResult_t best{};
  for (int i = 0; i < count; ++i) {
    if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
    plan.algo = results[i].algo;
    plan.workspace = results[i].workspaceSize;
    const float ms = TimeOnGpu(state.timing, [&](cudaStream_t on) {
      return RunMatmul(state, plan, on, Data(x), Data(w), Data(residual), has_residual,
                       Data(y)) == CUBLAS_STATUS_SUCCESS;
    });
    if (Logging()) {
      std::fprintf(stderr, "tunefarm matmul %ldx%ldx%ld: heuristic #%d: %.4f ms\n", long(m),
                   long(n), long(k), i, ms);
    }
    if (ms >= 0 && (best_ms < 0 || ms < best_ms)) {
      best_ms = ms;
      best = results[i];
    }
  }
  if (best_ms < 0) {
    TVM_FFI_THROW(RuntimeError) << "tunefarm vendor kernels: cuBLASLt has no algorithm for a "
                                << m << "x" << n << "x" << k << " matmul";
  }
  plan.algo = best.algo;
  plan.workspace = best.workspaceSize;
  return plan;
}

void Matmul(TensorView x, TensorView w, TensorView bias, TensorView residual, Shape config,
            TensorView y) {
  if (config.size() != kMatmulConfigSize) {
    TVM_FFI_THROW(ValueError) << "tunefarm_cublaslt_matmul: config needs " << kMatmulConfigSize
                              << " values";
  }
  if (!IsHalf(x.dtype()) && !IsFloat(x.dtype())) {
    TVM_FFI_THROW(TypeError) << "tunefarm_cublaslt_matmul: float16 or float32 only";
  }
  if (w.ndim() != 2 || x.ndim() < 2) {
    TVM_FFI_THROW(ValueError) << "tunefarm_cublaslt_matmul: a 2-D weight expected";
  }
  CheckDtype(w, x.dtype(), "the weight");
  CheckDtype(y, x.dtype(), "the output");
  CheckDtype(bias, x.dtype(), "the bias");
  const bool transposed_w = config[0] != 0, relu = config[1] != 0, has_residual = config[2] != 0;
  const int64_t k = x.size(-1);
  const int64_t m = x.numel() / k;
  const int64_t n = transposed_w ? w.size(0) : w.size(1);
  const int device = x.device().device_id;
  TF_CHECK_CUDA(cudaSetDevice(device));
  cudaStream_t stream = CurrentStream(device);
  std::lock_guard<std::mutex> lock(g_mutex);
  DeviceState& state = State(device, stream);
  std::vector<int64_t> key{m, n, k, x.dtype().bits, config[0], config[1], config[3], device};
  auto it = g_matmul_plans.find(key);
  if (it == g_matmul_plans.end()) {
    if (Capturing(stream)) {
      TVM_FFI_THROW(RuntimeError) << "tunefarm_cublaslt_matmul: no plan for a call inside a "
                                     "CUDA graph capture";
    }
    it = g_matmul_plans
             .emplace(key, MakeMatmulPlan(state, stream, m, n, k, IsHalf(x.dtype()), transposed_w,
                                          relu, config[3] != 0, x, w, bias, residual,
                                          has_residual, y))
             .first;
  }
  MatmulPlan& plan = it->second;
  for (const TensorView* t : {&x, &w, &bias, &residual, &y}) {
    if (reinterpret_cast<uintptr_t>(Data(*t)) % kMinAlignment != 0) {
      TVM_FFI_THROW(ValueError) << "tunefarm_cublaslt_matmul: a tensor is not " << kMinAlignment
                                << "-byte aligned";
    }
  }
  void* bias_pointer = Data(bias);
  TF_CHECK_CUBLAS(cublasLtMatmulDescSetAttribute(plan.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER,
                                                 &bias_pointer, sizeof(bias_pointer)));
  TF_CHECK_CUBLAS(
      RunMatmul(state, plan, stream, Data(x), Data(w), Data(residual), has_residual, Data(y)));
}

// ---------------------------------------------------------------------------------------------
// Depthwise convolution: y = act_out(conv(act_in(x), w) + bias), NHWC data, the weight laid out
// [kh, kw, C]; vendor_depthwise.cu. Each call is one kernel launch; the plan is the width of
// channels one thread takes, timed on the first call of each shape as cuDNN's algorithms are.

// config: stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, act_in, act_out, where an
// activation is 0 (none), 1 (ReLU) or 2 (ReLU6).
constexpr int kDepthwiseConfigSize = 8;

// The fastest width per shape, config, dtype and device (0: one element per thread).
std::map<std::vector<int64_t>, int> g_depthwise_widths;

void Depthwise(TensorView x, TensorView w, TensorView bias, TensorView z, Shape config,
               TensorView y) {
  (void)z;  // the calling convention's residual; a depthwise call takes none
  if (config.size() != kDepthwiseConfigSize) {
    TVM_FFI_THROW(ValueError) << "tunefarm_depthwise_conv2d: config needs "
                              << kDepthwiseConfigSize << " values";
  }
  if (x.ndim() != 4 || w.ndim() != 3 || y.ndim() != 4) {
    TVM_FFI_THROW(ValueError) << "tunefarm_depthwise_conv2d: NHWC data and a [kh, kw, C] weight "
                                 "expected";
  }
  if (!IsHalf(x.dtype()) && !IsFloat(x.dtype())) {
    TVM_FFI_THROW(TypeError) << "tunefarm_depthwise_conv2d: float16 or float32 only";
  }
  CheckDtype(w, x.dtype(), "the weight");
  CheckDtype(y, x.dtype(), "the output");
  CheckDtype(bias, x.dtype(), "the bias");
  const int64_t c = x.size(3);
  for (int64_t act : {config[6], config[7]}) {
    if (act < 0 || act > 2) TVM_FFI_THROW(ValueError) << "tunefarm_depthwise_conv2d: activation";
  }
  if (w.size(2) != c || y.size(3) != c || bias.numel() != c || y.size(0) != x.size(0)) {
    TVM_FFI_THROW(ValueError) << "tunefarm_depthwise_conv2d: channel counts differ";
  }
  for (int axis = 0; axis < 2; ++axis) {
    const int64_t in = x.size(1 + axis), out = y.size(1 + axis), kernel = w.size(axis);
    const int64_t stride = config[axis], pad = config[2 + axis], dilation = config[4 + axis];
    if (stride < 1 || dilation < 1 || pad < 0 ||
        out != (in + 2 * pad - dilation * (kernel - 1) - 1) / stride + 1) {
      TVM_FFI_THROW(ValueError) << "tunefarm_depthwise_conv2d: the output's size does not follow "
                                   "from the input's, the kernel's and the config";
    }
  }
  const int dims[14] = {int(x.size(0)), int(x.size(1)), int(x.size(2)), int(c),
                        int(y.size(1)), int(y.size(2)), int(w.size(0)), int(w.size(1)),
                        int(config[0]), int(config[1]), int(config[2]), int(config[3]),
                        int(config[4]), int(config[5])};
  const int device = x.device().device_id;
  TF_CHECK_CUDA(cudaSetDevice(device));
  cudaStream_t stream = CurrentStream(device);
  const bool half = IsHalf(x.dtype());
  auto launch = [&](int vector_bytes, cudaStream_t on) {
    return tunefarm_depthwise_launch(Data(x), Data(w), Data(bias), Data(y), half, dims,
                                     int(config[6]), int(config[7]), vector_bytes, on);
  };
  std::lock_guard<std::mutex> lock(g_mutex);
  std::vector<int64_t> key(dims, dims + 14);
  key.insert(key.end(), {config[6], config[7], x.dtype().bits});
  const int bytes = ChosenVariant(
      g_depthwise_widths, std::move(key), "tunefarm_depthwise_conv2d", nullptr, 0, device,
      stream, {16, 8, 4, 0}, [](const std::vector<int>&) {}, launch, [&](int width, float ms) {
        std::fprintf(stderr, "tunefarm depthwise x %dx%dx%dx%d k %dx%d s %d: %d bytes: %.4f ms\n",
                     dims[0], dims[1], dims[2], dims[3], dims[6], dims[7], dims[8], width, ms);
      });
  TF_CHECK_CUDA(static_cast<cudaError_t>(launch(bytes, stream)));
}

// ---------------------------------------------------------------------------------------------
// Attention: out = softmax(Q K^T * scale + mask) V per batch and head; vendor_attention.cu.
// Q, K, V and the output are fp16 tensors read and written through strides (the head split and
// merge of the graph); the mask fp16 or fp32, broadcast through zero strides.

// config: b, h, s, sk, d; the strides (batch, head, row) of q, k, v and out; the mask's (batch,
// head, row, key); the mask's bits (0: none, 16, 32); the scale's float32 bits; the offsets of
// q, k and v in their tensors (one tensor for the three where their projections were merged).
constexpr int kAttentionConfigSize = 5 + 12 + 4 + 2 + 3;

// The faster launch variant (vendor_attention.cu) per config and device, timed on the first call
// of each as the depthwise widths are.
std::map<std::vector<int64_t>, int> g_attention_variants;

// The largest element offset a (batch, head, row[, key]) walk reaches, plus one.
int64_t Extent(std::initializer_list<std::pair<int64_t, int64_t>> axes, int64_t last) {
  int64_t extent = last;
  for (const auto& [size, stride] : axes) {
    if (stride < 0) return -1;
    extent += (size - 1) * stride;
  }
  return extent;
}

void Attention(TensorView q, TensorView k, TensorView v, TensorView mask, Shape config,
               TensorView out) {
  if (config.size() != kAttentionConfigSize) {
    TVM_FFI_THROW(ValueError) << "tunefarm_attention: config needs " << kAttentionConfigSize
                              << " values";
  }
  const int64_t b = config[0], h = config[1], s = config[2], sk = config[3], d = config[4];
  const int64_t* st = config.data() + 5;
  const int64_t mask_bits = config[21];
  for (const TensorView* t : {&q, &k, &v, &out}) {
    if (!IsHalf(t->dtype())) TVM_FFI_THROW(TypeError) << "tunefarm_attention: float16 only";
  }
  if (b < 1 || h < 1 || s < 1 || sk < 1 || sk > 256 || d < 8 || d % 8 != 0) {
    TVM_FFI_THROW(ValueError) << "tunefarm_attention: 1 to 256 keys and a head size that is a "
                                 "multiple of 8 expected";
  }
  // Every read and write stays inside its tensor, whatever the config says; K and V are read
  // 16 bytes at a time, Q and the output 4.
  const std::pair<const TensorView*, int64_t> walks[] = {{&q, s}, {&k, sk}, {&v, sk}, {&out, s}};
  const int64_t offsets[4] = {config[23], config[24], config[25], 0};
  for (int i = 0; i < 4; ++i) {
    const int64_t* ts = st + 3 * i;
    const int64_t extent = Extent({{b, ts[0]}, {h, ts[1]}, {walks[i].second, ts[2]}}, d);
    const int64_t align = (i == 1 || i == 2) ? 8 : 2;
    if (extent < 0 || offsets[i] < 0 || offsets[i] + extent > walks[i].first->numel() ||
        offsets[i] % align != 0 || ts[0] % align != 0 || ts[1] % align != 0 ||
        ts[2] % align != 0) {
      TVM_FFI_THROW(ValueError) << "tunefarm_attention: a stride of q, k, v or out reaches "
                                   "outside its tensor or is misaligned";
    }
  }
  if (mask_bits != 0) {
    if ((mask_bits == 16 && !IsHalf(mask.dtype())) || (mask_bits == 32 && !IsFloat(mask.dtype())) ||
        (mask_bits != 16 && mask_bits != 32)) {
      TVM_FFI_THROW(TypeError) << "tunefarm_attention: the mask's dtype does not match the config";
    }
    const int64_t* ms = st + 12;
    const int64_t extent = Extent({{b, ms[0]}, {h, ms[1]}, {s, ms[2]}, {sk, ms[3]}}, 1);
    if (extent < 0 || extent > mask.numel()) {
      TVM_FFI_THROW(ValueError) << "tunefarm_attention: the mask's strides reach outside it";
    }
  }
  const int device = q.device().device_id;
  TF_CHECK_CUDA(cudaSetDevice(device));
  const int shape[5] = {int(b), int(h), int(s), int(sk), int(d)};
  const auto scale_bits = static_cast<uint32_t>(config[22]);
  float scale = 0.0f;
  std::memcpy(&scale, &scale_bits, sizeof scale);
  for (const TensorView* t : {&q, &k, &v, &out, &mask}) {
    if (t == &mask && mask_bits == 0) continue;  // a placeholder, never read
    if (reinterpret_cast<uintptr_t>(Data(*t)) % 16 != 0) {
      TVM_FFI_THROW(ValueError) << "tunefarm_attention: a tensor is not 16-byte aligned";
    }
  }
  auto at = [](const TensorView& t, int64_t offset) {
    return static_cast<const void*>(static_cast<const char*>(Data(t)) + 2 * offset);
  };
  auto launch = [&](int variant, cudaStream_t on) {
    return tunefarm_attention_launch(at(q, offsets[0]), at(k, offsets[1]), at(v, offsets[2]),
                                     mask_bits != 0 ? Data(mask) : nullptr, Data(out), shape, st,
                                     int(mask_bits), scale, variant, on);
  };
  cudaStream_t stream = CurrentStream(device);
  // TUNEFARM_ATTENTION_VARIANT=0 to 3 runs that variant untimed (the GPU tests check each), and
  // a list (0,1) is timed instead of all four. The tensor-core variants (2, 3) refuse head
  // sizes that are not multiples of 16 (timing skips them there). They passed the GPU test on
  // an H100 on 2026-12-07; variant 3 took BERT-base's 5.8 us where 0 took 8.0 us.
  std::lock_guard<std::mutex> lock(g_mutex);
  const int variant = ChosenVariant(
      g_attention_variants, std::vector<int64_t>(config.begin(), config.end()),
      "tunefarm_attention", "TUNEFARM_ATTENTION_VARIANT", 4, device, stream, {0, 1, 2, 3},
      [&](const std::vector<int>& pool) {
        // Whether one of the variants takes this shape on this GPU at all (a device attribute
        // query, once per config); timing skips those that do not.
        int shared_limit = 0;
        TF_CHECK_CUDA(cudaDeviceGetAttribute(&shared_limit,
                                             cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
        const bool any = std::any_of(pool.begin(), pool.end(), [&](int variant) {
          const size_t bytes = tunefarm_attention_shared_bytes(int(sk), int(d), variant);
          return bytes != 0 && bytes <= size_t(shared_limit);
        });
        if (!any) {
          TVM_FFI_THROW(ValueError)
              << "tunefarm_attention: " << sk << " keys of size " << d
              << " fit no launch variant asked for on this GPU (its shared memory; the "
                 "tensor-core ones take head sizes that are multiples of 16)";
        }
      },
      launch,
      [&](int candidate, float ms) {
        std::fprintf(stderr,
                     "tunefarm attention b %d h %d s %d sk %d d %d: variant %d: %.4f ms\n",
                     shape[0], shape[1], shape[2], shape[3], shape[4], candidate, ms);
      });
  TF_CHECK_CUDA(static_cast<cudaError_t>(launch(variant, stream)));
}

// ---------------------------------------------------------------------------------------------
// Residual add and layer norm: y = layer_norm(x + residual) over the last axis, and its fp16
// copy; vendor_layer_norm.cu. x fp16 or fp32; residual, gamma, beta and y fp32.

// The faster variant (vendor_layer_norm.cu) per shape, dtypes and device.
std::map<std::vector<int64_t>, int> g_layer_norm_variants;

// config: the epsilon's float32 bits.
void AddLayerNormInto(const TensorView& x, const TensorView& residual, const TensorView& gamma,
                      const TensorView& beta, const Shape& config, const TensorView& y,
                      const TensorView* y_half) {
  if (config.size() != 1) TVM_FFI_THROW(ValueError) << "tunefarm_add_layer_norm: config";
  if (!IsHalf(x.dtype()) && !IsFloat(x.dtype())) {
    TVM_FFI_THROW(TypeError) << "tunefarm_add_layer_norm: float16 or float32 input only";
  }
  for (const TensorView* t : {&residual, &gamma, &beta, &y}) {
    if (!IsFloat(t->dtype())) TVM_FFI_THROW(TypeError) << "tunefarm_add_layer_norm: float32";
  }
  if (y_half != nullptr && !IsHalf(y_half->dtype())) {
    TVM_FFI_THROW(TypeError) << "tunefarm_add_layer_norm: the copy must be float16";
  }
  const int64_t cols = gamma.numel(), n = x.numel();
  if (cols < 1 || cols > tunefarm_add_layer_norm_max_cols() || beta.numel() != cols ||
      n % cols != 0 || residual.numel() != n || y.numel() != n ||
      (y_half != nullptr && y_half->numel() != n)) {
    TVM_FFI_THROW(ValueError) << "tunefarm_add_layer_norm: sizes differ, or rows of over "
                              << tunefarm_add_layer_norm_max_cols() << " values";
  }
  const auto bits = static_cast<uint32_t>(config[0]);
  float epsilon = 0.0f;
  std::memcpy(&epsilon, &bits, sizeof epsilon);
  const int device = x.device().device_id;
  TF_CHECK_CUDA(cudaSetDevice(device));
  cudaStream_t stream = CurrentStream(device);
  const int64_t rows = n / cols;
  auto launch = [&](int variant, cudaStream_t on) {
    return tunefarm_add_layer_norm_launch(Data(x), IsHalf(x.dtype()), Data(residual), Data(gamma),
                                          Data(beta), Data(y),
                                          y_half != nullptr ? Data(*y_half) : nullptr, rows,
                                          int(cols), epsilon, variant, on);
  };
  // TUNEFARM_LAYER_NORM_VARIANT=0 (a block a row) or 1 (a warp a row) forces one; by default
  // both are timed (1 passed the GPU test on 2026-12-07; it is faster on short rows, and slower
  // on BERT's 128x768: 3.4 us where 0 takes 2.3 us).
  std::lock_guard<std::mutex> lock(g_mutex);
  const int variant = ChosenVariant(
      g_layer_norm_variants, {rows, cols, x.dtype().bits, y_half != nullptr},
      "tunefarm_add_layer_norm", "TUNEFARM_LAYER_NORM_VARIANT", 2, device, stream, {0, 1},
      [](const std::vector<int>&) {}, launch, [&](int candidate, float ms) {
        std::fprintf(stderr, "tunefarm add_layer_norm %ldx%ld: variant %d: %.4f ms\n", long(rows),
                     long(cols), candidate, ms);
      });
  TF_CHECK_CUDA(static_cast<cudaError_t>(launch(variant, stream)));
}

void AddLayerNorm(TensorView x, TensorView residual, TensorView gamma, TensorView beta,
                  Shape config, TensorView y) {
  AddLayerNormInto(x, residual, gamma, beta, config, y, nullptr);
}

void AddLayerNormWithHalf(TensorView x, TensorView residual, TensorView gamma, TensorView beta,
                          Shape config, TensorView y, TensorView y_half) {
  AddLayerNormInto(x, residual, gamma, beta, config, y, &y_half);
}

}  // namespace tunefarm_vendor

TVM_FFI_DLL_EXPORT_TYPED_FUNC(tunefarm_cudnn_conv2d, tunefarm_vendor::Conv2d);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(tunefarm_cublaslt_matmul, tunefarm_vendor::Matmul);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(tunefarm_depthwise_conv2d, tunefarm_vendor::Depthwise);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(tunefarm_attention, tunefarm_vendor::Attention);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(tunefarm_add_layer_norm, tunefarm_vendor::AddLayerNorm);
TVM_FFI_DLL_EXPORT_TYPED_FUNC(tunefarm_add_layer_norm_half, tunefarm_vendor::AddLayerNormWithHalf);
