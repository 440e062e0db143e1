// Golden test of the reference dequantization on real files written by llama.cpp's quantizer:
// ../shared/models/tiny-random-*.gguf against ../shared/expected/tiny-random-tensors.json, which
// holds, for the layer-0 tensors, the first 8 values, the sum and the sum of squares that llama.cpp's
// reference dequantization (gguf-py) gives, summed in float64.
//
// Also: every tensor of every file dequantizes to finite values, and our reference quantizers,
// fed the F16 file's values, reproduce llama-quantize's blocks except near rounding boundaries.
#include <gtest/gtest.h>

#include <cctype>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "common/shared_files.h"
#include "core/dtype.h"
#include "gguf/gguf.h"
#include "quant/quant.h"

namespace ll {
namespace {

const std::string k_expected_json = "expected/tiny-random-tensors.json";
const std::vector<std::string> k_model_files = {"tiny-random-f16.gguf",    "tiny-random-bf16.gguf",
                                                "tiny-random-q8_0.gguf",   "tiny-random-q4_0.gguf",
                                                "tiny-random-q4_k_m.gguf", "tiny-random-q6_k.gguf"};

nlohmann::json load_expected() {
  std::ifstream in(test::shared_path(k_expected_json));
  return nlohmann::json::parse(in);
}

std::vector<float> dequantize_tensor(const gguf::TensorInfo& t) {
  std::vector<float> out(t.n_elements);
  quant::dequantize_row(t.type, t.data, out.data(), static_cast<int64_t>(t.n_elements));
  return out;
}

// Distance in units in the last place between two floats of the same sign (0 if equal).
int64_t ulp_distance(float a, float b) {
  if (a == b) return 0;
  if (std::signbit(a) != std::signbit(b)) return INT64_MAX;
  int32_t ia, ib;
  std::memcpy(&ia, &a, 4);
  std::memcpy(&ib, &b, 4);
  return std::llabs(static_cast<int64_t>(ia) - static_cast<int64_t>(ib));
}

// The expected sums are float64 sums of the same float32 values we produce, so only the order of
// summation differs: naive summation of n terms is within n * 2^-53 * sum|terms| of the exact sum
// (n <= 2^18 here gives < 3e-11 * sum|terms|); 1e-10 leaves margin and still catches one element
// off by a thousandth of the tensor's magnitude.
constexpr double k_sum_rel_tolerance = 1e-10;

TEST(QuantGolden, ShippedFilesMatchTheExpectationList) {
  LL_REQUIRE_SHARED(test::shared_path(k_expected_json));
  const auto expected = load_expected();
  std::set<std::string> listed;
  for (const auto& [file, tensors] : expected.items()) listed.insert(file);
  std::set<std::string> on_disk;
  for (const auto& e : std::filesystem::directory_iterator(test::shared_path("models"))) {
    const auto name = e.path().filename().string();
    if (name.rfind("tiny-random-", 0) == 0 && e.path().extension() == ".gguf") on_disk.insert(name);
  }
  EXPECT_EQ(listed, on_disk);
  EXPECT_EQ(listed, std::set<std::string>(k_model_files.begin(), k_model_files.end()));
}

class QuantGoldenFile : public ::testing::TestWithParam<std::string> {};

TEST_P(QuantGoldenFile, Layer0TensorsMatchLlamaCppReference) {
  const std::string path = test::shared_path("models/" + GetParam());
  LL_REQUIRE_SHARED(path);
  LL_REQUIRE_SHARED(test::shared_path(k_expected_json));
  const auto expected = load_expected();
  ASSERT_TRUE(expected.contains(GetParam())) << GetParam() << " has no expectations";
  const auto& cases = expected.at(GetParam());
  ASSERT_FALSE(cases.empty());

  auto file = gguf::File::open(path);
  ASSERT_TRUE(file.has_value()) << file.error().message;

  for (const auto& c : cases) {
    const std::string name = c.at("tensor").get<std::string>();
    SCOPED_TRACE(GetParam() + " " + name);
    const gguf::TensorInfo* t = file->find_tensor(name);
    ASSERT_NE(t, nullptr) << "tensor missing";
    EXPECT_EQ(dtype_name(t->type), c.at("type").get<std::string>());
    ASSERT_EQ(t->n_elements, c.at("n").get<uint64_t>());

    const auto values = dequantize_tensor(*t);
    const auto& first8 = c.at("first8");
    ASSERT_EQ(first8.size(), 8u);
    for (size_t i = 0; i < 8; ++i) {
      const float want = static_cast<float>(first8[i].get<double>());
      // The README allows "float precision"; we hold ourselves to bit-exactness (0 ulp).
      EXPECT_EQ(ulp_distance(values[i], want), 0) << "first8[" << i << "]: " << values[i] << " vs " << want;
    }

    double sum = 0, sumsq = 0, sum_abs = 0;
    for (float v : values) {
      sum += v;
      sum_abs += std::fabs(v);
      sumsq += static_cast<double>(v) * v;
    }
    const double want_sum = c.at("sum").get<double>();
    const double want_sumsq = c.at("sumsq").get<double>();
    EXPECT_NEAR(sum, want_sum, k_sum_rel_tolerance * sum_abs + 1e-30) << "sum";
    EXPECT_NEAR(sumsq, want_sumsq, k_sum_rel_tolerance * sumsq + 1e-30) << "sumsq";
  }
}

TEST_P(QuantGoldenFile, EveryTensorDequantizesToFiniteValues) {
  const std::string path = test::shared_path("models/" + GetParam());
  LL_REQUIRE_SHARED(path);
  auto file = gguf::File::open(path);
  ASSERT_TRUE(file.has_value()) << file.error().message;
  ASSERT_FALSE(file->tensors().empty());

  std::map<std::string, int> n_by_type;
  for (const auto& t : file->tensors()) {
    SCOPED_TRACE(GetParam() + " " + t.name);
    ++n_by_type[std::string(dtype_name(t.type))];
    const auto row_bytes = dtype_row_bytes(t.type, t.row_elems());
    ASSERT_TRUE(row_bytes.has_value()) << "row of " << t.row_elems() << " is not whole blocks";
    ASSERT_EQ(t.n_bytes, *row_bytes * t.n_rows());
    ASSERT_NE(t.data, nullptr);

    const auto values = dequantize_tensor(t);
    size_t n_bad = 0;
    double sumsq = 0;
    for (float v : values) {
      if (!std::isfinite(v)) ++n_bad;
      sumsq += static_cast<double>(v) * v;
    }
    EXPECT_EQ(n_bad, 0u) << "non-finite values";
    EXPECT_GT(sumsq, 0.0) << "all-zero tensor";  // random weights and norms are never all zero

    // Row by row gives the same values as the whole tensor at once.
    if (t.n_rows() > 1) {
      const uint64_t last = t.n_rows() - 1;
      std::vector<float> row(t.row_elems());
      quant::dequantize_row(t.type, t.data + last * *row_bytes, row.data(), static_cast<int64_t>(row.size()));
      EXPECT_EQ(0, std::memcmp(row.data(), values.data() + last * t.row_elems(), row.size() * sizeof(float)));
    }
  }
  std::string summary;
  for (const auto& [type, n] : n_by_type) summary += type + ":" + std::to_string(n) + " ";
  RecordProperty("tensor_types", summary);
}

INSTANTIATE_TEST_SUITE_P(TinyRandom, QuantGoldenFile, ::testing::ValuesIn(k_model_files),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           std::string s = info.param.substr(std::string("tiny-random-").size());
                           s = s.substr(0, s.size() - std::string(".gguf").size());
                           for (char& ch : s) {
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           }
                           return s;
                         });

// Bytes of a block that hold scales (the rest are quants): offset and length.
struct ScaleBytes {
  size_t offset, length;
};
ScaleBytes scale_bytes(DType t) {
  switch (t) {
    case DType::Q4_0:
    case DType::Q8_0:
      return {0, 2};  // d
    case DType::Q4_K:
      return {0, 4 + quant::k_k_scale_size};  // d, dmin, scales
    case DType::Q6_K:
      return {quant::k_qk_k / 2 + quant::k_qk_k / 4, quant::k_qk_k / 16 + 2};  // scales, d
    default:
      return {0, 0};
  }
}

// The quantized files were made by llama-quantize from the same F32 weights as the F16 file
// (without importance matrix, so with the *_ref quantizers). Requantizing the F16 values cannot be
// bit-exact (they are rounded), but wherever the block's scales come out identical the quants may
// differ only for values within an F16 rounding of a rounding boundary: a few per thousand.
TEST(QuantGolden, ReferenceQuantizersReproduceLlamaQuantize) {
  const std::string f16_path = test::shared_path("models/tiny-random-f16.gguf");
  LL_REQUIRE_SHARED(f16_path);
  auto f16 = gguf::File::open(f16_path);
  ASSERT_TRUE(f16.has_value()) << f16.error().message;

  for (const std::string q : {"q8_0", "q4_0", "q4_k_m", "q6_k"}) {
    const std::string path = test::shared_path("models/tiny-random-" + q + ".gguf");
    LL_REQUIRE_SHARED(path);
    auto qf = gguf::File::open(path);
    ASSERT_TRUE(qf.has_value()) << qf.error().message;
    for (const auto& t : qf->tensors()) {
      if (t.type == DType::F32 || t.type == DType::F16 || t.type == DType::BF16) continue;
      SCOPED_TRACE(q + " " + t.name + " " + std::string(dtype_name(t.type)));
      const gguf::TensorInfo* src = f16->find_tensor(t.name);
      ASSERT_NE(src, nullptr);
      ASSERT_EQ(src->n_elements, t.n_elements);
      const auto x = dequantize_tensor(*src);
      std::vector<uint8_t> mine(t.n_bytes);
      quant::quantize_row(t.type, x.data(), mine.data(), static_cast<int64_t>(x.size()));

      const size_t block_bytes = dtype_block_bytes(t.type);
      const ScaleBytes sb = scale_bytes(t.type);
      size_t n_blocks = t.n_bytes / block_bytes, n_same_scale = 0, n_quant_bytes = 0, n_quant_diff = 0;
      for (size_t b = 0; b < n_blocks; ++b) {
        const uint8_t* ours = mine.data() + b * block_bytes;
        const uint8_t* theirs = t.data + b * block_bytes;
        if (std::memcmp(ours + sb.offset, theirs + sb.offset, sb.length) != 0) continue;
        ++n_same_scale;
        for (size_t i = 0; i < block_bytes; ++i) {
          if (i >= sb.offset && i < sb.offset + sb.length) continue;
          ++n_quant_bytes;
          n_quant_diff += ours[i] != theirs[i];
        }
      }
      // Measured: 48-100% of blocks keep identical scales and <= 1.0% of their quant bytes differ.
      EXPECT_GE(n_same_scale * 4, n_blocks)
          << n_same_scale << " of " << n_blocks << " blocks keep their scales";
      EXPECT_LE(n_quant_diff * 100, n_quant_bytes * 3)
          << n_quant_diff << " of " << n_quant_bytes << " quant bytes differ";
    }
  }
}

}  // namespace
}  // namespace ll
