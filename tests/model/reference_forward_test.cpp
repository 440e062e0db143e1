// The forward pass against a direct double-precision implementation of the same architecture,
// written out plainly here, for llama (normal RoPE) and qwen2 (Q/K/V biases, NeoX RoPE).
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "model/forward.h"
#include "model/model.h"
#include "model/synthetic.h"
#include "quant/quant.h"

namespace ll::model {
namespace {

using Vec = std::vector<double>;

Vec dequant(const Weight& w) {
  std::vector<float> f(static_cast<size_t>(w.n_rows * w.n_cols));
  const size_t rb = *dtype_row_bytes(w.type, static_cast<uint64_t>(w.n_cols));
  for (int64_t r = 0; r < w.n_rows; ++r) {
    quant::dequantize_row(w.type, static_cast<const uint8_t*>(w.data) + r * rb, f.data() + r * w.n_cols, w.n_cols);
  }
  return Vec(f.begin(), f.end());
}

Vec matvec(const Weight& w, const Vec& x) {
  const Vec m = dequant(w);
  Vec y(static_cast<size_t>(w.n_rows), 0.0);
  for (int64_t r = 0; r < w.n_rows; ++r) {
    for (int64_t c = 0; c < w.n_cols; ++c) y[static_cast<size_t>(r)] += m[static_cast<size_t>(r * w.n_cols + c)] * x[static_cast<size_t>(c)];
  }
  return y;
}

Vec rmsnorm(const Vec& x, const float* w, double eps) {
  double ss = 0;
  for (double v : x) ss += v * v;
  const double s = 1.0 / std::sqrt(ss / static_cast<double>(x.size()) + eps);
  Vec y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = x[i] * s * w[i];
  return y;
}

void rope(Vec& x, int64_t n_heads, int64_t hd, int64_t n_rot, int64_t pos, double base, bool neox) {
  for (int64_t h = 0; h < n_heads; ++h) {
    double* v = x.data() + h * hd;
    for (int64_t i = 0; i < n_rot / 2; ++i) {
      const double theta = static_cast<double>(pos) * std::pow(base, -2.0 * static_cast<double>(i) / static_cast<double>(n_rot));
      const int64_t a = neox ? i : 2 * i, b = neox ? i + n_rot / 2 : 2 * i + 1;
      const double x0 = v[a], x1 = v[b];
      v[a] = x0 * std::cos(theta) - x1 * std::sin(theta);
      v[b] = x0 * std::sin(theta) + x1 * std::cos(theta);
    }
  }
}

// Logits of every token of `tokens` (one sequence), computed directly.
// The architecture's rules are restated here (not taken from the engine): `neox` RoPE order, and
// biases read straight from the file by name.
std::vector<Vec> reference_logits(const Model& m, const std::vector<int32_t>& tokens, bool neox) {
  const HParams& hp = m.hparams();
  const Weights& W = m.weights();
  const int64_t E = hp.n_embd, hd = hp.head_dim, group = hp.n_head / hp.n_head_kv;
  const Vec emb = dequant(W.tok_embd);
  std::vector<Vec> xs;
  for (int32_t t : tokens) xs.emplace_back(emb.begin() + t * E, emb.begin() + (t + 1) * E);
  for (int64_t l = 0; l < hp.n_layer; ++l) {
    const LayerWeights& L = W.layers[static_cast<size_t>(l)];
    auto bias = [&](const char* name) -> const float* {
      const auto* t = m.file().find_tensor("blk." + std::to_string(l) + "." + name);
      return t ? reinterpret_cast<const float*>(t->data) : nullptr;
    };
    const float* bq = bias("attn_q.bias");
    const float* bk = bias("attn_k.bias");
    const float* bv = bias("attn_v.bias");
    std::vector<Vec> ks, vs, qs;
    for (size_t p = 0; p < xs.size(); ++p) {
      const Vec xn = rmsnorm(xs[p], L.attn_norm, hp.rms_eps);
      Vec q = matvec(L.wq, xn), k = matvec(L.wk, xn), v = matvec(L.wv, xn);
      if (bq) for (size_t i = 0; i < q.size(); ++i) q[i] += bq[i];
      if (bk) for (size_t i = 0; i < k.size(); ++i) k[i] += bk[i];
      if (bv) for (size_t i = 0; i < v.size(); ++i) v[i] += bv[i];
      rope(q, hp.n_head, hd, hp.n_rot, static_cast<int64_t>(p), hp.rope_freq_base, neox);
      rope(k, hp.n_head_kv, hd, hp.n_rot, static_cast<int64_t>(p), hp.rope_freq_base, neox);
      qs.push_back(q);
      ks.push_back(k);
      vs.push_back(v);
    }
    for (size_t p = 0; p < xs.size(); ++p) {
      Vec att(static_cast<size_t>(hp.q_dim()), 0.0);
      for (int64_t h = 0; h < hp.n_head; ++h) {
        const int64_t kvh = h / group;
        Vec s(p + 1);
        double mx = -1e300;
        for (size_t j = 0; j <= p; ++j) {
          double d = 0;
          for (int64_t i = 0; i < hd; ++i) d += qs[p][static_cast<size_t>(h * hd + i)] * ks[j][static_cast<size_t>(kvh * hd + i)];
          s[j] = d / std::sqrt(static_cast<double>(hd));
          mx = std::max(mx, s[j]);
        }
        double sum = 0;
        for (double& v : s) sum += (v = std::exp(v - mx));
        for (size_t j = 0; j <= p; ++j) {
          for (int64_t i = 0; i < hd; ++i) att[static_cast<size_t>(h * hd + i)] += s[j] / sum * vs[j][static_cast<size_t>(kvh * hd + i)];
        }
      }
      const Vec o = matvec(L.wo, att);
      for (int64_t i = 0; i < E; ++i) xs[p][static_cast<size_t>(i)] += o[static_cast<size_t>(i)];
      const Vec xn = rmsnorm(xs[p], L.ffn_norm, hp.rms_eps);
      const Vec g = matvec(L.w_gate, xn), u = matvec(L.w_up, xn);
      Vec hmid(g.size());
      for (size_t i = 0; i < g.size(); ++i) hmid[i] = g[i] / (1.0 + std::exp(-g[i])) * u[i];
      const Vec d = matvec(L.w_down, hmid);
      for (int64_t i = 0; i < E; ++i) xs[p][static_cast<size_t>(i)] += d[static_cast<size_t>(i)];
    }
  }
  std::vector<Vec> logits;
  for (const Vec& x : xs) logits.push_back(matvec(W.output, rmsnorm(x, W.output_norm, hp.rms_eps)));
  return logits;
}

class ReferenceForward : public testing::TestWithParam<std::string> {};

TEST_P(ReferenceForward, MatchesDirectDoublePrecisionComputation) {
  GenModelOptions g;
  g.preset = ModelPreset{"tiny", 64, 2, 4, 2, 96, 300, 32};
  g.type = DType::F32;
  g.arch = GetParam();
  const std::string path = testing::TempDir() + "/ref_" + GetParam() + ".gguf";
  ASSERT_TRUE(write_random_model(g, path).has_value());
  auto model = Model::load(path);
  ASSERT_TRUE(model.has_value()) << model.error().message;
  EXPECT_EQ((*model)->hparams().arch->name, GetParam());
  const std::vector<int32_t> tokens = {1, 17, 250, 3, 99, 42, 7, 200};
  const bool is_qwen2 = GetParam() == "qwen2";
  EXPECT_EQ((*model)->file().find_tensor("blk.0.attn_q.bias") != nullptr, is_qwen2);
  const auto ref = reference_logits(**model, tokens, /*neox=*/is_qwen2);
  ThreadPool pool(2);
  auto runner = UnitRunner::create(**model, 0, (*model)->n_units() - 1, pool, 32).value();
  std::vector<BatchToken> batch;
  for (size_t i = 0; i < tokens.size(); ++i) batch.push_back({0, static_cast<int32_t>(i), tokens[i], true});
  std::vector<float> out;
  ASSERT_TRUE(runner->forward(batch, nullptr, out).has_value());
  ASSERT_EQ(out.size(), tokens.size() * 300);
  // The engine keeps K and V in F16 (like llama.cpp) and computes in F32: named tolerance
  // relative to the logits' scale.
  constexpr double k_rel_tol = 2e-3;
  for (size_t p = 0; p < tokens.size(); ++p) {
    double scale = 0, max_err = 0;
    for (size_t i = 0; i < 300; ++i) {
      scale = std::max(scale, std::fabs(ref[p][i]));
      max_err = std::max(max_err, std::fabs(ref[p][i] - out[p * 300 + i]));
    }
    EXPECT_LT(max_err, k_rel_tol * scale) << GetParam() << " token " << p;
  }
}

INSTANTIATE_TEST_SUITE_P(Archs, ReferenceForward, testing::Values("llama", "qwen2"));

}  // namespace
}  // namespace ll::model
