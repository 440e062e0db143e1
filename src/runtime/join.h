// Joining a running cluster: a worker started after the run (`lingua worker --join ORIGIN`) asks the
// origin (`lingua run/serve --join-listen ENDPOINT`) to take it in. The origin then reaches it like a
// late worker of the cluster file (Coordinator::add_worker): HELLO on the worker's own endpoint,
// profiling on that link, and units at the next re-plan.
//
//   worker                                  origin's join endpoint
//     HELLO (role worker)        -->
//                                <--        HELLO (role coordinator)
//     JOIN {endpoint, key}       -->        admit(endpoint, key)
//                                <--        HEARTBEAT (accepted) | ERROR (refused, with the reason)
//
// Over CURVE the join endpoint accepts only the client keys it is given, and the origin connects to
// the worker with the key JOIN names, so a peer that does not hold that key's secret gets nowhere.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "core/error.h"
#include "net/protocol.h"
#include "net/transport.h"

namespace ll::runtime {

struct JoinOptions {
  std::string origin;      // the origin's join endpoint, tcp://HOST:PORT
  std::string origin_key;  // its CURVE public key (empty over plain links)
  std::string advertise;   // where this worker listens, as the origin can reach it
  std::string public_key;  // this worker's CURVE public key (empty over plain links)
  net::Hello hello;        // this worker's HELLO
  net::Millis attempt_timeout{2000};  // per attempt; then it tries again
  std::function<bool()> should_stop;  // asked between attempts and while waiting
  std::function<void(const std::string&)> log;
};

// Worker side: asks until the origin accepts (ok) or refuses (its reason), or should_stop (an
// "interrupted" error). An origin that is not up yet, or does not answer, is asked again.
Expected<void> join_cluster(net::Network& net, const JoinOptions& options);

// Origin side: serves a join endpoint on its own thread until destroyed.
class JoinListener {
 public:
  // Decides on a JOIN: an error refuses it (its message goes back to the worker).
  using Admit = std::function<Expected<void>(const std::string& endpoint, const std::string& public_key)>;
  static Expected<std::unique_ptr<JoinListener>> start(net::Network& net, const std::string& endpoint,
                                                       net::Hello mine, Admit admit);
  ~JoinListener();
  JoinListener(const JoinListener&) = delete;
  JoinListener& operator=(const JoinListener&) = delete;

  std::string endpoint() const;  // resolved (port 0 becomes the port picked)
  uint64_t n_refused() const;    // JOINs refused and bad messages

  struct Impl;

 private:
  explicit JoinListener(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace ll::runtime
