// Workers serving on threads of the test process over the in-process transport, so a whole pipeline
// (coordinator + workers) runs inside one test.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "net/transport.h"
#include "runtime/worker.h"

namespace ll::test {

class InprocCluster {
 public:
  explicit InprocCluster(int n_workers, runtime::WorkerOptions base = {}, std::string prefix = "inproc://w")
      : net_(net::make_inproc_network()) {
    for (int i = 0; i < n_workers; ++i) {
      runtime::WorkerOptions o = base;
      o.listen = prefix + std::to_string(i + 1);
      o.name = std::string("w").append(std::to_string(i + 1));
      auto w = runtime::Worker::create(o, *net_);
      if (!w) {
        ADD_FAILURE() << w.error().message;
        continue;
      }
      endpoints_.push_back((*w)->endpoint());
      workers_.push_back(std::move(*w));
    }
    for (auto& w : workers_) {
      runtime::Worker* wp = w.get();
      threads_.emplace_back([this, wp] { (void)wp->serve([this] { return stop_.load(); }); });
    }
  }
  ~InprocCluster() {
    stop_ = true;
    for (auto& t : threads_) t.join();
  }
  net::Network& net() { return *net_; }
  const std::vector<std::string>& endpoints() const { return endpoints_; }
  runtime::Worker& worker(size_t i) { return *workers_.at(i); }

 private:
  std::unique_ptr<net::Network> net_;
  std::vector<std::unique_ptr<runtime::Worker>> workers_;
  std::vector<std::string> endpoints_;
  std::vector<std::thread> threads_;
  std::atomic<bool> stop_{false};
};

}  // namespace ll::test
