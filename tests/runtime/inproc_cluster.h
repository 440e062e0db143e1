// Workers serving on threads of the test process over the in-process transport, so a whole pipeline
// (coordinator + workers) runs inside one test.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "net/transport.h"
#include "runtime/worker.h"

namespace ll::test {

class InprocCluster {
 public:
  // `customize(i, options)`, when given, adjusts worker i's options (0-based) before it is created.
  explicit InprocCluster(int n_workers, runtime::WorkerOptions base = {}, std::string prefix = "inproc://w",
                         const std::function<void(size_t, runtime::WorkerOptions&)>& customize = {})
      : net_(net::make_inproc_network()) {
    for (int i = 0; i < n_workers; ++i) {
      runtime::WorkerOptions o = base;
      o.listen = prefix + std::to_string(i + 1);
      o.name = std::string("w").append(std::to_string(i + 1));
      if (customize) customize(static_cast<size_t>(i), o);
      auto w = runtime::Worker::create(o, *net_);
      if (!w) {
        ADD_FAILURE() << w.error().message;
        continue;
      }
      endpoints_.push_back((*w)->endpoint());
      workers_.push_back(std::move(*w));
    }
    for (size_t i = 0; i < workers_.size(); ++i) killed_.push_back(std::make_unique<std::atomic<bool>>(false));
    for (size_t i = 0; i < workers_.size(); ++i) {
      runtime::Worker* wp = workers_[i].get();
      std::atomic<bool>* killed = killed_[i].get();
      threads_.emplace_back([this, wp, killed] { (void)wp->serve([this, killed] { return stop_.load() || killed->load(); }); });
    }
  }
  ~InprocCluster() {
    stop_ = true;
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }
  // Stops worker i and destroys it (its listener closes): as a worker process killed with kill -9
  // looks to its peers. Returns once it is gone.
  void kill(size_t i) {
    killed_.at(i)->store(true);
    if (threads_.at(i).joinable()) threads_[i].join();
    workers_.at(i).reset();
  }
  net::Network& net() { return *net_; }
  const std::vector<std::string>& endpoints() const { return endpoints_; }
  runtime::Worker& worker(size_t i) { return *workers_.at(i); }  // (not after kill(i))

 private:
  std::unique_ptr<net::Network> net_;
  std::vector<std::unique_ptr<runtime::Worker>> workers_;
  std::vector<std::string> endpoints_;
  std::vector<std::thread> threads_;
  std::vector<std::unique_ptr<std::atomic<bool>>> killed_;
  std::atomic<bool> stop_{false};
};

}  // namespace ll::test
