// An Engine for tests: each request "generates" n_predict tokens of the text "ab" (or up to the
// first stop string); it can be held at the start of a batch and made to fail.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <thread>
#include <mutex>
#include <vector>

#include "serve/engine.h"

namespace ll::test {

class FakeEngine final : public serve::Engine {
 public:
  Expected<std::vector<model::GenerateResult>> generate(
      const std::vector<serve::EngineRequest>& requests,
      const std::function<void(size_t, std::string_view)>& on_text) override {
    {
      std::unique_lock lock(m_);
      batch_sizes_.push_back(requests.size());
      ++n_started_;
      cv_.notify_all();
      cv_.wait(lock, [&] { return !held_; });
      if (fail_) return fail_error_;
    }
    std::vector<model::GenerateResult> out;
    for (size_t i = 0; i < requests.size(); ++i) {
      model::GenerateResult r;
      r.n_prompt = static_cast<int64_t>(requests[i].prompt_tokens.size());
      const int64_t n = requests[i].options.n_predict < 0 ? 4 : requests[i].options.n_predict;
      for (int64_t k = 0; k < n; ++k) {
        if (token_delay_ms_ > 0) std::this_thread::sleep_for(std::chrono::milliseconds(token_delay_ms_));
        r.tokens.push_back(static_cast<int32_t>(k));
        r.text += "ab";
        if (on_text) on_text(i, "ab");
        if (requests[i].cancelled && requests[i].cancelled()) {
          ++n_cancelled_;
          break;
        }
      }
      r.stop_reason = model::StopReason::length;
      out.push_back(std::move(r));
    }
    return out;
  }
  size_t max_batch() const override { return max_batch_; }
  Expected<serve::ClusterInfo> describe() override {
    serve::ClusterInfo info;
    info.model = "fake";
    info.mode = "test";
    info.devices.push_back(serve::DeviceInfo{"origin", "local", {{0, 0}}, 1 << 20, 1000, 1.5});
    info.devices.push_back(serve::DeviceInfo{"phone-a", "tcp://192.0.2.1:5601", {{1, 6}}, 2 << 20, 5000, 9.5});
    info.stages.push_back(serve::StageInfo{"origin", 0, 0, 0.25});
    info.stages.push_back(serve::StageInfo{"phone-a", 1, 6, 3.5});
    return info;
  }

  void hold() {
    std::lock_guard lock(m_);
    held_ = true;
  }
  void release() {
    {
      std::lock_guard lock(m_);
      held_ = false;
    }
    cv_.notify_all();
  }
  void fail_with(Error e) {
    std::lock_guard lock(m_);
    fail_ = true;
    fail_error_ = std::move(e);
  }
  // Waits until `n` batches have started.
  void wait_started(size_t n) {
    std::unique_lock lock(m_);
    cv_.wait(lock, [&] { return n_started_ >= n; });
  }
  std::vector<size_t> batch_sizes() {
    std::lock_guard lock(m_);
    return batch_sizes_;
  }
  size_t max_batch_ = 4;
  int token_delay_ms_ = 0;
  std::atomic<int> n_cancelled_{0};

 private:
  std::mutex m_;
  std::condition_variable cv_;
  bool held_ = false;
  bool fail_ = false;
  Error fail_error_;
  size_t n_started_ = 0;
  std::vector<size_t> batch_sizes_;
};

}  // namespace ll::test
