// The planner as mixed-integer linear programs solved with COIN-OR CBC. docs/planner.md writes the
// models out; in short, with "nodes" = the D devices plus (ring) a second copy of the origin for the
// last stage, so that every node hosts at most one stage:
//
// Latency (one MILP, minimise the sum of stage costs):
//   x[i,s,e]   binary: node i runs units s..e as one stage (only intervals that fit the device's
//              memory; the origin's first copy starts at 0, ring's second copy ends at U-1, no other
//              node holds unit 0, nor in ring mode unit U-1)
//   t[j,i,k]   in [0,1]: node i's stage ends at unit j and node k's starts at j+1
//   partition  sum of x over the intervals that hold unit u = 1, for every u
//   one stage  sum of x over node i's intervals <= 1 (= 1 for the origin's first copy)
//   hand-over  sum_k t[j,i,k] = sum_s x[i,s,j];  sum_i t[j,i,k] = sum_e x[k,j+1,e]  (t is the product
//              of "a stage of i ends at j" and "a stage of k starts at j+1", linearised as a
//              transportation polytope: integral once x is)
//   memory     the ring origin's two stages share its memory: one row; every other limit is met by
//              leaving out the intervals that do not fit
//   objective  sum x * (compute of s..e on i, + the token's hop home for e = U-1)
//              + sum t * hop(i, k, out_bytes[j])
//
// Throughput (minimise the largest stage cost T): the direct model (T >= each node's cost) has a weak
// LP relaxation — a fractional plan spreads a long stage thinly over many devices — and CBC could not
// prove optimality at 8 devices x 40 units in a minute. Instead the bottleneck is found by bisection
// over the finitely many possible stage costs, each step a feasibility MILP "is there a plan whose
// every stage costs <= theta?":
//   y[i,s,e,k] binary: node i runs s..e and hands over to node k (k = none for the last stage); its
//              exact stage cost c = compute + hop is known, so every arc with c > theta is left out
//   flow       the arcs form a path from (unit 0, origin) to the end: flow conservation at every
//              (unit, node), plus partition, one stage per node and the ring origin's memory as above
// The optimum is the smallest theta that is feasible; once "anything below the incumbent?" is proven
// infeasible, the incumbent is optimal.
//
// Plans found by CBC are re-costed exactly by evaluate(), after the exact split DP for the device
// order CBC chose has polished away any solver tolerance (and, for throughput, any slack below theta).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <tuple>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wall"
#pragma GCC diagnostic ignored "-Wextra"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#include <coin/CbcModel.hpp>
#include <coin/CbcSolver.hpp>
#include <coin/ClpSolve.hpp>
#include <coin/CoinMessageHandler.hpp>
#include <coin/CoinPackedMatrix.hpp>
#include <coin/OsiClpSolverInterface.hpp>
#pragma GCC diagnostic pop

#include "plan/plan.h"

namespace ll::plan {

namespace {

using Clock = std::chrono::steady_clock;

// Beyond this many columns the models alone would take minutes and gigabytes.
constexpr double kMaxColumns = 4e6;
constexpr double kInf = std::numeric_limits<double>::infinity();

// Devices as nodes that host at most one stage each.
struct Nodes {
  int n_units = 0, n_nodes = 0, origin = 0, o_first = 0, o_last = -1;  // o_last: ring's second origin copy
  bool ring = false, latency = false;

  Nodes(const Profile& p, const SolveOptions& o)
      : n_units(p.n_units()),
        n_nodes(p.n_devices() + (o.ring ? 1 : 0)),
        origin(p.origin),
        o_first(p.origin),
        o_last(o.ring ? p.n_devices() : -1),
        ring(o.ring),
        latency(o.objective == Objective::latency) {}
  int device(int i) const { return i == o_last ? origin : i; }
  // Whether node i may run units s..e as one stage (memory aside).
  bool may_run(int i, int s, int e) const {
    if ((i == o_first) != (s == 0)) return false;       // the origin's first copy, and only it, holds unit 0
    if (i == o_last && e != n_units - 1) return false;  // ring: the second copy ends the plan
    if (ring && e == n_units - 1 && i != o_first && i != o_last) return false;
    return true;
  }
  // Whether node k's stage may directly follow node i's.
  bool may_follow(int i, int k) const {
    // The first stage is never re-entered, the last never left.
    if (i == k || k == o_first || i == o_last) return false;
    if (ring && latency && i == o_first && k == o_last) return false;  // costs what one stage costs: keep one
    return true;
  }
};

// Column names for MIP starts ("c123"); snprintf, as g++ 12 misreports "c" + std::to_string(i)
// under -Wrestrict.
std::string col_name(int col) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "c%d", col);
  return buf;
}

int no_callback(CbcModel* /*model*/, int /*where_from*/) {
  return 0;
}

// A row under construction. (CoinPackedVector checks every insert for a duplicate index, which made
// building the larger models take seconds; these rows never repeat a column.)
struct SparseRow {
  std::vector<int> index;
  std::vector<double> value;
  void insert(int col, double v) {
    index.push_back(col);
    value.push_back(v);
  }
  int getNumElements() const { return static_cast<int>(index.size()); }
};

// The constraint matrix, row by row, in compressed sparse row form.
class RowSet {
 public:
  explicit RowSet(int n_cols) : n_cols_(n_cols) {}
  void add(const SparseRow& r, double lb, double ub) {
    start_.push_back(static_cast<CoinBigIndex>(index_.size()));
    length_.push_back(r.getNumElements());
    index_.insert(index_.end(), r.index.begin(), r.index.end());
    value_.insert(value_.end(), r.value.begin(), r.value.end());
    lb_.push_back(lb);
    ub_.push_back(ub);
  }
  CoinPackedMatrix matrix() const {
    return CoinPackedMatrix(false, n_cols_, static_cast<int>(lb_.size()),
                            static_cast<CoinBigIndex>(value_.size()), value_.data(), index_.data(),
                            start_.data(), length_.data());
  }
  const std::vector<double>& lb() const { return lb_; }
  const std::vector<double>& ub() const { return ub_; }

 private:
  int n_cols_;
  std::vector<CoinBigIndex> start_;
  std::vector<int> length_, index_;
  std::vector<double> value_, lb_, ub_;
};

struct CbcOutcome {
  bool has_solution = false;
  bool proven_optimal = false;  // search completed with a solution
  bool proven_infeasible = false;
  std::vector<double> solution;
};

OsiClpSolverInterface make_lp(const RowSet& rows, const std::vector<double>& col_lb,
                              const std::vector<double>& col_ub, const std::vector<double>& obj,
                              int n_integer) {
  OsiClpSolverInterface lp;
  lp.messageHandler()->setLogLevel(0);
  // The dual simplex for the first LP: Clp's automatic choice may pick its "idiot" crash, whose
  // crossover segfaults (in ClpPresolve) on these LPs in Clp 1.17.
  ClpSolve initial;
  initial.setSolveType(ClpSolve::useDual);
  lp.setSolveOptions(initial);
  lp.loadProblem(rows.matrix(), col_lb.data(), col_ub.data(), obj.data(), rows.lb().data(), rows.ub().data());
  for (int c = 0; c < n_integer; ++c) lp.setInteger(c);
  return lp;
}

// CBC's standard driver (presolve, cuts, heuristics) with a wall-clock limit and no output. `start`
// (optional) gives values for the first start.size() columns, which must be named col_name(c).
CbcOutcome run_cbc(const OsiClpSolverInterface& lp, double seconds, const std::vector<double>& start,
                   bool heuristics = true) {
  // CBC's command-line driver parses its arguments through global state: one solve at a time.
  static std::mutex driver_mutex;
  const std::lock_guard<std::mutex> lock(driver_mutex);
  CbcModel model(lp);
  model.setLogLevel(0);
  model.messageHandler()->setLogLevel(0);
  model.solver()->messageHandler()->setLogLevel(0);
  if (!start.empty()) {
    std::vector<std::string> names;
    for (size_t c = 0; c < start.size(); ++c) names.push_back(col_name(static_cast<int>(c)));
    std::vector<const char*> ptrs;
    for (const auto& n : names) ptrs.push_back(n.c_str());
    model.setMIPStart(static_cast<int>(ptrs.size()), ptrs.data(), start.data());
  }
  CbcSolverUsefulData data;
  CbcMain0(model, data);
  data.noPrinting_ = true;
  data.useSignalHandler_ = false;
  char sec[32];
  std::snprintf(sec, sizeof sec, "%.3f", std::max(seconds, 0.001));
#ifdef LL_PLAN_DEBUG_LOG
  const char* log_level = "1";
#else
  const char* log_level = "0";
#endif
  const char* argv[] = {"lingua-plan", "-log",       log_level,   "-sec",   sec,
                        "-timeMode",   "elapsed",    "-ratioGap", "0",      "-allowableGap",
                        "1e-10",       "-increment", "1e-10",     "-solve", "-quit"};
  std::vector<const char*> args(argv, argv + sizeof argv / sizeof argv[0]);
  if (!heuristics) args.insert(args.end() - 2, {"-heuristicsOnOff", "off"});
  CbcMain1(static_cast<int>(args.size()), args.data(), model, no_callback, data);
  CbcOutcome out;
  const double* sol = model.bestSolution();
  if (sol != nullptr) {
    out.has_solution = true;
    out.solution.assign(sol, sol + model.getNumCols());
    out.proven_optimal = model.isProvenOptimal();
  } else {
    out.proven_infeasible =
        model.isProvenInfeasible() || (model.status() == 0 && !model.isSecondsLimitReached());
  }
  return out;
}

double seconds_left(Clock::time_point deadline) {
  return std::chrono::duration<double>(deadline - Clock::now()).count();
}

// Node of each stage of a plan (the origin's last stage in ring mode is the second copy).
std::vector<int> stage_nodes(int o_last, const Profile& p, const std::vector<Stage>& stages) {
  std::vector<int> nodes;
  for (size_t s = 0; s < stages.size(); ++s) {
    const bool second_origin = o_last >= 0 && s > 0 && s + 1 == stages.size() && stages[s].device == p.origin;
    nodes.push_back(second_origin ? o_last : stages[s].device);
  }
  return nodes;
}

// Cheap good plans to start CBC from: the baselines and, for the devices in profile order and in
// order of total unit time, each prefix with its best split.
bool heuristic_plan(const Profile& p, const SolveOptions& o, std::vector<Stage>& best, double& best_cost) {
  bool found = false;
  auto offer = [&](const std::vector<Stage>& stages) {
    auto c = evaluate(p, stages, o);
    if (c && (!found || *c < best_cost)) {
      best = stages;
      best_cost = *c;
      found = true;
    }
  };
  if (auto e = plan_even(p, 0, o)) offer(*e);
  if (auto m = plan_memory(p, o)) offer(*m);
  std::vector<int> by_index, by_speed;
  for (int d = 0; d < p.n_devices(); ++d) {
    if (d != p.origin) by_index.push_back(d);
  }
  by_speed = by_index;
  std::vector<double> total_ms(static_cast<size_t>(p.n_devices()), 0.0);
  for (int d = 0; d < p.n_devices(); ++d) {
    for (double ms : p.devices[d].unit_ms) total_ms[static_cast<size_t>(d)] += ms;
  }
  std::stable_sort(by_speed.begin(), by_speed.end(), [&](int x, int y) {
    return total_ms[static_cast<size_t>(x)] < total_ms[static_cast<size_t>(y)];
  });
  SplitResult split;
  for (const auto* others : {&by_index, &by_speed}) {
    std::vector<int> order{p.origin};
    for (size_t n = 0; n <= others->size(); ++n) {
      if (n > 0) order.push_back((*others)[n - 1]);
      std::vector<int> closed = order;
      if (o.ring) closed.push_back(p.origin);
      // (The origin twice in a row costs what one stage costs under latency: offer one stage only.)
      const bool twice = o.ring && n == 0;
      if (!(twice && o.objective == Objective::latency) && best_split_for_order(p, closed, o, split)) {
        offer(split.stages);
      }
      if (twice && best_split_for_order(p, order, o, split)) offer(split.stages);
    }
  }
  return found;
}

// Local search over device orders. An order is the origin, a "middle" of distinct other devices,
// and (ring) the origin again; a move inserts, removes, replaces, swaps or moves one device of the
// middle, and each order is costed by its exact best split. First improvement, until a local optimum
// or until the work budget (in DP cell updates, roughly) is spent.
class OrderSearch {
 public:
  OrderSearch(const Profile& p, const SolveOptions& o, double budget, Clock::time_point deadline)
      : p_(p), o_(o), budget_(budget), deadline_(deadline) {}

  // Improves `plan` (a valid plan costing `cost`) in place.
  void improve(std::vector<Stage>& plan, double& cost) {
    std::vector<int> middle;
    for (size_t s = 1; s < plan.size(); ++s) {
      if (!(o_.ring && s + 1 == plan.size())) middle.push_back(plan[s].device);
    }
    std::vector<char> in_middle(static_cast<size_t>(p_.n_devices()), 0);
    for (int d : middle) in_middle[static_cast<size_t>(d)] = 1;
    std::vector<int> others;
    for (int d = 0; d < p_.n_devices(); ++d) {
      if (d != p_.origin) others.push_back(d);
    }
    SplitResult trial;
    auto try_middle = [&](const std::vector<int>& m) {
      if (!cost_of(m, trial) || !(trial.cost_ms < cost)) return false;
      plan = trial.stages;
      cost = trial.cost_ms;
      middle = m;
      std::fill(in_middle.begin(), in_middle.end(), 0);
      for (int d : middle) in_middle[static_cast<size_t>(d)] = 1;
      return true;
    };
    bool improved = true;
    while (improved && spent_ < budget_) {
      improved = false;
      const size_t n = middle.size();
      std::vector<int> m;
      for (size_t i = 0; i < n && !improved; ++i) {  // remove
        m = middle;
        m.erase(m.begin() + static_cast<std::ptrdiff_t>(i));
        improved = try_middle(m);
      }
      for (int d : others) {  // insert or replace with an unused device
        if (improved || in_middle[static_cast<size_t>(d)]) continue;
        for (size_t i = 0; i <= n && !improved; ++i) {
          m = middle;
          m.insert(m.begin() + static_cast<std::ptrdiff_t>(i), d);
          improved = try_middle(m);
        }
        for (size_t i = 0; i < n && !improved; ++i) {
          m = middle;
          m[i] = d;
          improved = try_middle(m);
        }
      }
      for (size_t i = 0; i < n && !improved; ++i) {  // swap, move
        for (size_t j = 0; j < n && !improved; ++j) {
          if (i == j) continue;
          m = middle;
          if (i < j) {
            std::swap(m[i], m[j]);
            improved = try_middle(m);
            if (improved) break;
          }
          m = middle;
          const int d = m[i];
          m.erase(m.begin() + static_cast<std::ptrdiff_t>(i));
          m.insert(m.begin() + static_cast<std::ptrdiff_t>(j), d);
          improved = try_middle(m);
        }
      }
    }
  }

 private:
  bool cost_of(const std::vector<int>& middle, SplitResult& out) {
    if (spent_ >= budget_ || Clock::now() >= deadline_) {
      spent_ = budget_;
      return false;
    }
    std::vector<int> order{p_.origin};
    order.insert(order.end(), middle.begin(), middle.end());
    const double k = static_cast<double>(order.size() + (o_.ring ? 1 : 0)), u = p_.n_units();
    spent_ += o_.ring ? k * u * u * u / 6 : k * u * u / 2;
    if (!o_.ring) return best_split_for_order(p_, order, o_, out);
    bool found = false;
    SplitResult closed;
    if (middle.empty() && best_split_for_order(p_, order, o_, out)) found = true;  // one stage
    if (middle.empty() && o_.objective == Objective::latency) return found;  // [origin, origin] = one stage
    order.push_back(p_.origin);
    if (best_split_for_order(p_, order, o_, closed) && (!found || closed.cost_ms < out.cost_ms)) {
      out = closed;
      found = true;
    }
    return found;
  }

  const Profile& p_;
  const SolveOptions& o_;
  double budget_, spent_ = 0;
  Clock::time_point deadline_;
};

// The best split for the device order of `stages` (a plan CBC found), if it beats the plan itself.
std::vector<Stage> polish(const Profile& p, const SolveOptions& o, std::vector<Stage> stages) {
  std::vector<int> order;
  for (const Stage& s : stages) order.push_back(s.device);
  auto raw = evaluate(p, stages, o);
  SplitResult best;
  if (best_split_for_order(p, order, o, best) && (!raw || best.cost_ms < *raw)) return best.stages;
  return stages;
}

// Work budget of one local search, in DP cell updates (about a nanosecond or two each).
constexpr double kLocalSearchBudget = 1e8;

struct Search {
  std::vector<Stage> plan;  // best plan so far (empty: none)
  double cost_ms = kInf;
  bool proven_optimal = false;
  bool proven_infeasible = false;
  double solver_objective_ms = std::numeric_limits<double>::quiet_NaN();
};

// ---- latency: one MILP -------------------------------------------------------------------------

struct Interval {
  int node, first, last;
  double cost_ms;  // compute (+ the token's hop home when it is the last stage)
  uint64_t memory_bytes;
};

// Calls fn(node, device, first, last, compute_ms, memory_bytes) for every stage a node may run that
// fits its device's memory (ranges grow unit by unit, so sums are built incrementally).
template <class Fn>
void for_each_stage(const Profile& p, const Nodes& g, Fn&& fn) {
  for (int i = 0; i < g.n_nodes; ++i) {
    const int d = g.device(i);
    for (int s = 0; s < g.n_units; ++s) {
      uint64_t mem = 0;
      double compute = 0.0;
      for (int e = s; e < g.n_units; ++e) {
        mem = add_sat(mem, p.units[e].memory_bytes);
        if (mem > p.devices[d].memory_bytes) break;
        compute += p.devices[d].unit_ms[e];
        if (g.may_run(i, s, e)) fn(i, d, s, e, compute, mem);
      }
    }
  }
}

Expected<Search> solve_latency(const Profile& p, const SolveOptions& o, Search search,
                               Clock::time_point deadline) {
  if (seconds_left(deadline) <= 0 && !search.plan.empty()) return search;
  const Nodes g(p, o);
  const int n_units = g.n_units, n_nodes = g.n_nodes;
  std::vector<Interval> xs;
  for_each_stage(p, g, [&](int i, int d, int s, int e, double compute, uint64_t mem) {
    const double home = e == n_units - 1 ? p.hop_ms(d, p.origin, p.token_bytes) : 0.0;
    xs.push_back(Interval{i, s, e, compute + home, mem});
  });
  auto at = [&](int node, int unit) { return static_cast<size_t>(node) * n_units + unit; };
  std::vector<std::vector<int>> ends(static_cast<size_t>(n_nodes) * n_units), starts(ends.size());
  for (size_t c = 0; c < xs.size(); ++c) {
    ends[at(xs[c].node, xs[c].last)].push_back(static_cast<int>(c));
    starts[at(xs[c].node, xs[c].first)].push_back(static_cast<int>(c));
  }
  struct Transfer {
    int after_unit, from, to;
    double cost_ms;
  };
  std::vector<Transfer> ts;
  for (int j = 0; j + 1 < n_units; ++j) {
    for (int i = 0; i < n_nodes; ++i) {
      if (ends[at(i, j)].empty()) continue;
      for (int k = 0; k < n_nodes; ++k) {
        if (!g.may_follow(i, k) || starts[at(k, j + 1)].empty()) continue;
        ts.push_back(Transfer{j, i, k, p.hop_ms(g.device(i), g.device(k), p.units[j].out_bytes)});
      }
    }
  }
  const int n_x = static_cast<int>(xs.size()), n_t = static_cast<int>(ts.size()), n_cols = n_x + n_t;

  double max_cost = 0.0;
  for (const auto& x : xs) max_cost = std::max(max_cost, x.cost_ms);
  for (const auto& t : ts) max_cost = std::max(max_cost, t.cost_ms);
  const double scale = max_cost > 0 ? 1.0 / max_cost : 1.0;  // objective units per ms: coefficients <= 1

  std::vector<double> col_lb(static_cast<size_t>(n_cols), 0.0), col_ub(static_cast<size_t>(n_cols), 1.0),
      obj(static_cast<size_t>(n_cols), 0.0);
  for (int c = 0; c < n_x; ++c) obj[static_cast<size_t>(c)] = xs[static_cast<size_t>(c)].cost_ms * scale;
  for (int c = 0; c < n_t; ++c)
    obj[static_cast<size_t>(n_x + c)] = ts[static_cast<size_t>(c)].cost_ms * scale;

  RowSet rows(n_cols);
  const double inf = std::numeric_limits<double>::max();
  auto add_row = [&](const SparseRow& v, double lb, double ub) { rows.add(v, lb, ub); };
  std::vector<SparseRow> cover(static_cast<size_t>(n_units)), node_row(static_cast<size_t>(n_nodes));
  for (int c = 0; c < n_x; ++c) {
    const Interval& x = xs[static_cast<size_t>(c)];
    for (int u = x.first; u <= x.last; ++u) cover[static_cast<size_t>(u)].insert(c, 1.0);
    node_row[static_cast<size_t>(x.node)].insert(c, 1.0);
  }
  for (int u = 0; u < n_units; ++u) {
    if (cover[static_cast<size_t>(u)].getNumElements() == 0) {  // no node can hold u here
      search.proven_infeasible = search.plan.empty();
      return search;
    }
    add_row(cover[static_cast<size_t>(u)], 1.0, 1.0);
  }
  for (int i = 0; i < n_nodes; ++i) {
    if (node_row[static_cast<size_t>(i)].getNumElements() == 0) continue;
    add_row(node_row[static_cast<size_t>(i)], i == g.o_first ? 1.0 : -inf, 1.0);
  }
  {
    std::vector<SparseRow> out(static_cast<size_t>(n_nodes) * n_units), in(out.size());
    for (int c = 0; c < n_t; ++c) {
      const Transfer& t = ts[static_cast<size_t>(c)];
      out[at(t.from, t.after_unit)].insert(n_x + c, 1.0);
      in[at(t.to, t.after_unit + 1)].insert(n_x + c, 1.0);
    }
    for (int i = 0; i < n_nodes; ++i) {
      for (int j = 0; j + 1 < n_units; ++j) {
        SparseRow& ov = out[at(i, j)];  // a stage of i that ends at j hands over to someone
        for (int c : ends[at(i, j)]) ov.insert(c, -1.0);
        if (ov.getNumElements() > 0) add_row(ov, 0.0, 0.0);
        SparseRow& iv = in[at(i, j + 1)];  // a stage of i that starts at j+1 is handed to
        for (int c : starts[at(i, j + 1)]) iv.insert(c, -1.0);
        if (iv.getNumElements() > 0) add_row(iv, 0.0, 0.0);
      }
    }
  }
  uint64_t total = 0;
  for (const auto& unit : p.units) total = add_sat(total, unit.memory_bytes);
  if (g.ring && total > p.devices[p.origin].memory_bytes) {  // the origin's two stages share its memory
    const double cap = static_cast<double>(std::max<uint64_t>(p.devices[p.origin].memory_bytes, 1));
    SparseRow v;
    for (int c = 0; c < n_x; ++c) {
      const Interval& x = xs[static_cast<size_t>(c)];
      if ((x.node == g.o_first || x.node == g.o_last) && x.memory_bytes > 0) {
        v.insert(c, static_cast<double>(x.memory_bytes) / cap);
      }
    }
    if (v.getNumElements() > 0) add_row(v, -inf, static_cast<double>(p.devices[p.origin].memory_bytes) / cap);
  }

  OsiClpSolverInterface lp = make_lp(rows, col_lb, col_ub, obj, n_x);
  std::vector<double> start;
  if (!search.plan.empty()) {  // the incumbent as a MIP start
    std::map<std::tuple<int, int, int>, int> index;
    for (int c = 0; c < n_x; ++c) {
      const Interval& x = xs[static_cast<size_t>(c)];
      index[{x.node, x.first, x.last}] = c;
    }
    start.assign(static_cast<size_t>(n_x), 0.0);
    const std::vector<int> nodes = stage_nodes(g.o_last, p, search.plan);
    bool complete = true;
    for (size_t s = 0; s < search.plan.size(); ++s) {
      auto it = index.find({nodes[s], search.plan[s].first_unit, search.plan[s].last_unit});
      if (it == index.end()) {
        complete = false;
      } else {
        start[static_cast<size_t>(it->second)] = 1.0;
      }
    }
    if (complete) {
      lp.setIntParam(OsiNameDiscipline, 1);
      for (int c = 0; c < n_x; ++c) lp.setColName(c, col_name(c));
    } else {
      start.clear();
    }
  }
  const CbcOutcome r = run_cbc(lp, seconds_left(deadline), start);
  if (!r.has_solution) {
    search.proven_infeasible = r.proven_infeasible && search.plan.empty();
    return search;
  }
  std::vector<Stage> stages;
  for (int c = 0; c < n_x; ++c) {
    if (r.solution[static_cast<size_t>(c)] > 0.5) {
      const Interval& x = xs[static_cast<size_t>(c)];
      stages.push_back(Stage{g.device(x.node), x.first, x.last});
    }
  }
  std::sort(stages.begin(), stages.end(),
            [](const Stage& a, const Stage& b) { return a.first_unit < b.first_unit; });
  double objective = 0.0;
  for (int c = 0; c < n_cols; ++c)
    objective += obj[static_cast<size_t>(c)] * r.solution[static_cast<size_t>(c)];
  search.solver_objective_ms = objective / scale;
  stages = polish(p, o, std::move(stages));
  auto cost = evaluate(p, stages, o);
  if (!cost) return make_error(ErrorCode::internal, "the MILP's plan is not valid: " + cost.error().message);
  if (*cost < search.cost_ms || search.plan.empty()) {
    search.plan = std::move(stages);
    search.cost_ms = *cost;
  }
  search.proven_optimal = r.proven_optimal;
  return search;
}

// ---- throughput: bisection over feasibility MILPs ----------------------------------------------

struct Arc {
  int node, first, last, next;  // next = -1: the last stage
  double cost_ms;               // exactly evaluate()'s stage cost
  uint64_t memory_bytes;
};

enum class Feasibility { feasible, infeasible, unknown };

// Is there a plan using only `arcs` (all costing <= theta)? On success, `plan` holds one.
Expected<Feasibility> feasible_with(const Profile& p, const SolveOptions& o, const Nodes& g,
                                    const std::vector<Arc>& arcs, Clock::time_point deadline,
                                    std::vector<Stage>& plan) {
  const int n_units = g.n_units, n_nodes = g.n_nodes, n_cols = static_cast<int>(arcs.size());
  std::vector<SparseRow> cover(static_cast<size_t>(n_units)), node_row(static_cast<size_t>(n_nodes));
  std::vector<SparseRow> flow(static_cast<size_t>(n_nodes) * (n_units + 1));  // (node, first unit)
  auto at = [&](int node, int unit) { return static_cast<size_t>(node) * (n_units + 1) + unit; };
  for (int c = 0; c < n_cols; ++c) {
    const Arc& a = arcs[static_cast<size_t>(c)];
    for (int u = a.first; u <= a.last; ++u) cover[static_cast<size_t>(u)].insert(c, 1.0);
    node_row[static_cast<size_t>(a.node)].insert(c, 1.0);
    flow[at(a.node, a.first)].insert(c, -1.0);
    if (a.next >= 0) flow[at(a.next, a.last + 1)].insert(c, 1.0);
  }
  for (const auto& v : cover) {
    if (v.getNumElements() == 0) return Feasibility::infeasible;  // some unit fits in no cheap enough stage
  }
  if (flow[at(g.o_first, 0)].getNumElements() == 0) return Feasibility::infeasible;

  RowSet rows(n_cols);
  const double inf = std::numeric_limits<double>::max();
  auto add_row = [&](const SparseRow& v, double lb, double ub) { rows.add(v, lb, ub); };
  for (const auto& v : cover) add_row(v, 1.0, 1.0);
  for (int i = 0; i < n_nodes; ++i) {
    if (node_row[static_cast<size_t>(i)].getNumElements() > 0)
      add_row(node_row[static_cast<size_t>(i)], -inf, 1.0);
  }
  for (int i = 0; i < n_nodes; ++i) {  // what flows into (i, j) flows out; the path starts at (origin, 0)
    for (int j = 0; j < n_units; ++j) {
      const SparseRow& v = flow[at(i, j)];
      if (v.getNumElements() == 0) continue;
      const double rhs = (i == g.o_first && j == 0) ? -1.0 : 0.0;
      add_row(v, rhs, rhs);
    }
  }
  uint64_t total = 0;
  for (const auto& unit : p.units) total = add_sat(total, unit.memory_bytes);
  if (g.ring && total > p.devices[p.origin].memory_bytes) {
    const double cap = static_cast<double>(std::max<uint64_t>(p.devices[p.origin].memory_bytes, 1));
    SparseRow v;
    for (int c = 0; c < n_cols; ++c) {
      const Arc& a = arcs[static_cast<size_t>(c)];
      if ((a.node == g.o_first || a.node == g.o_last) && a.memory_bytes > 0) {
        v.insert(c, static_cast<double>(a.memory_bytes) / cap);
      }
    }
    if (v.getNumElements() > 0) add_row(v, -inf, static_cast<double>(p.devices[p.origin].memory_bytes) / cap);
  }
  const std::vector<double> col_lb(static_cast<size_t>(n_cols), 0.0),
      col_ub(static_cast<size_t>(n_cols), 1.0), obj(static_cast<size_t>(n_cols), 0.0);  // any plan will do
  const OsiClpSolverInterface lp = make_lp(rows, col_lb, col_ub, obj, n_cols);
  // No primal heuristics: near the optimum most probes are infeasible, and the feasibility pump
  // spends seconds failing to find what is not there before the search proves it so.
  const CbcOutcome r = run_cbc(lp, seconds_left(deadline), {}, /*heuristics=*/false);
  if (!r.has_solution) return r.proven_infeasible ? Feasibility::infeasible : Feasibility::unknown;
  plan.clear();
  for (int c = 0; c < n_cols; ++c) {
    if (r.solution[static_cast<size_t>(c)] > 0.5) {
      const Arc& a = arcs[static_cast<size_t>(c)];
      plan.push_back(Stage{g.device(a.node), a.first, a.last});
    }
  }
  std::sort(plan.begin(), plan.end(),
            [](const Stage& a, const Stage& b) { return a.first_unit < b.first_unit; });
  auto cost = evaluate(p, plan, o);
  if (!cost) return make_error(ErrorCode::internal, "the MILP's plan is not valid: " + cost.error().message);
  return Feasibility::feasible;
}

// The bottleneck search shared by both throughput models. The optimum is one of the finitely many
// stage costs in `costs`, none below `lower`; probe(theta, plan) answers "is there a plan whose every
// stage costs <= theta?" (and gives one). Known throughout: no plan has its largest stage cost
// <= below; the incumbent costs search.cost_ms.
template <class Probe>
Expected<Search> bisect(const Profile& p, const SolveOptions& o, Search search, Clock::time_point deadline,
                        std::vector<double> costs, double lower, Probe&& probe) {
  std::erase_if(costs, [&](double c) { return c < lower; });
  std::sort(costs.begin(), costs.end());
  costs.erase(std::unique(costs.begin(), costs.end()), costs.end());
  double below = -kInf;
  int descents = 0;  // probes just below the incumbent since the last infeasible one
  std::vector<Stage> found;
  for (;;) {
    const size_t lo =
        static_cast<size_t>(std::upper_bound(costs.begin(), costs.end(), below) - costs.begin());
    const size_t hi =
        static_cast<size_t>(std::lower_bound(costs.begin(), costs.end(), search.cost_ms) - costs.begin());
    if (lo >= hi) {  // nothing left between what is impossible and what we have
      if (search.plan.empty()) {
        search.proven_infeasible = true;
      } else {
        search.proven_optimal = true;
      }
      return search;
    }
    if (seconds_left(deadline) <= 0) return search;
    // Ask whether the incumbent can be beaten at all: after the local search it often cannot, and a
    // plan that beats it is polished into the next incumbent. After a success, halve the range
    // instead (feasible probes are the expensive ones), then ask again, and so on.
    const size_t at = (search.plan.empty() || descents < 1) ? hi - 1 : lo + (hi - lo) / 2;
    descents = at == hi - 1 ? descents + 1 : 0;
    const double theta = costs[at];
    LL_ASSIGN_OR_RETURN(Feasibility f, probe(theta, found));
    if (f == Feasibility::unknown) return search;
    if (f == Feasibility::infeasible) {
      below = theta;
      descents = 0;
      continue;
    }
    search.solver_objective_ms = *evaluate(p, found, o);
    found = polish(p, o, std::move(found));
    double cost = *evaluate(p, found, o);
    OrderSearch(p, o, kLocalSearchBudget, deadline).improve(found, cost);
    if (cost < search.cost_ms) {
      search.plan = found;
      search.cost_ms = cost;
    }
  }
}

Expected<Search> solve_throughput(const Profile& p, const SolveOptions& o, Search search,
                                  Clock::time_point deadline) {
  const Nodes g(p, o);
  const int n_units = g.n_units, n_nodes = g.n_nodes;
  // Every stage there could be, with its successor and exact cost.
  std::vector<Arc> all;
  for_each_stage(p, g, [&](int i, int d, int s, int e, double compute, uint64_t mem) {
    if (e == n_units - 1) {
      all.push_back(Arc{i, s, e, -1, compute + p.hop_ms(d, p.origin, p.token_bytes), mem});
      return;
    }
    for (int k = 0; k < n_nodes; ++k) {
      if (g.may_follow(i, k)) all.push_back(Arc{i, s, e, k, compute + p.hop_ms(d, g.device(k), p.units[e].out_bytes), mem});
    }
  });
  // No plan can beat the cheapest stage that could hold the costliest-to-hold unit.
  std::vector<double> cheapest(static_cast<size_t>(n_units), kInf);
  for (const Arc& a : all) {
    for (int u = a.first; u <= a.last; ++u)
      cheapest[static_cast<size_t>(u)] = std::min(cheapest[static_cast<size_t>(u)], a.cost_ms);
  }
  const double lower = *std::max_element(cheapest.begin(), cheapest.end());
  if (lower == kInf) {
    search.proven_infeasible = search.plan.empty();
    return search;
  }
  std::vector<double> costs;
  costs.reserve(all.size());
  for (const Arc& a : all) costs.push_back(a.cost_ms);
  std::vector<Arc> arcs;
  return bisect(p, o, std::move(search), deadline, std::move(costs), lower,
                [&](double theta, std::vector<Stage>& found) -> Expected<Feasibility> {
                  arcs.clear();
                  for (const Arc& a : all) {
                    if (a.cost_ms <= theta) arcs.push_back(a);
                  }
                  return feasible_with(p, o, g, arcs, deadline, found);
                });
}

// ---- repeated blocks: a compact MILP over device orders and block counts --------------------------

// Most models are an embedding, B identical transformer blocks and an output head, and `lingua
// profile` times one block per device: every block then costs the same on a given device, weighs the
// same and hands over the same bytes. A plan is then fully described by the order of its devices and
// how many blocks each holds, and the interval models above (whose size grows with U^2 and whose
// symmetric intervals CBC has to branch through one by one) can be replaced by one that does not
// depend on U at all. docs/planner.md writes it out:
//   z[a,b]  binary: node a's stage hands over to node b's (the device order, as a path from the origin)
//   u[i]    binary: node i hosts a stage;  l[i]: binary, its stage is the last one (holds the head)
//   n[i]    integer: blocks node i holds;  f[a,b] >= 0: single-commodity flow that keeps the path in one
//           piece (the origin sends one unit to every other node used)
// minimising the sum of stage costs (latency; throughput is solve_uniform_throughput below).
struct UniformBlocks {
  int n_blocks = 0;             // units 1..U-2
  uint64_t block_bytes = 0;     // memory of one block
  double block_out_bytes = 0;   // what a stage ending in a block (or in unit 0) hands over
  std::vector<double> block_ms; // per device
};

// Whether the profile has that shape (equality is exact: measured profiles repeat the same double).
bool uniform_blocks(const Profile& p, UniformBlocks& ub) {
  const int n_units = p.n_units();
  if (n_units < 3) return false;
  const UnitProfile& b0 = p.units[1];
  if (p.units[0].out_bytes != b0.out_bytes) return false;
  for (int u = 2; u + 1 < n_units; ++u) {
    if (p.units[u].memory_bytes != b0.memory_bytes || p.units[u].out_bytes != b0.out_bytes) return false;
  }
  ub.block_ms.clear();
  for (const DeviceProfile& d : p.devices) {
    for (int u = 2; u + 1 < n_units; ++u) {
      if (d.unit_ms[u] != d.unit_ms[1]) return false;
    }
    ub.block_ms.push_back(d.unit_ms[1]);
  }
  ub.n_blocks = n_units - 2;
  ub.block_bytes = b0.memory_bytes;
  ub.block_out_bytes = b0.out_bytes;
  return true;
}

// Blocks node i can hold besides the units it must hold, as a middle stage (`mid`: the origin's first
// copy also holds the embedding) and as the last one (`last`: the head too); -1 when not even those
// fit. The ring origin's two copies share one device, so both get what is left beside embedding and
// head (a row over the two then caps their sum). `may_last`: only the origin's copies end a ring plan.
struct NodeCaps {
  int mid = 0, last = 0;
  bool may_last = true;
};

NodeCaps node_caps(const Profile& p, const Nodes& g, const UniformBlocks& ub, int i) {
  auto cap = [&](uint64_t fixed) -> int {
    const uint64_t mem = p.devices[static_cast<size_t>(g.device(i))].memory_bytes;
    if (fixed > mem) return -1;
    if (ub.block_bytes == 0) return ub.n_blocks;
    return static_cast<int>(std::min<uint64_t>((mem - fixed) / ub.block_bytes, static_cast<uint64_t>(ub.n_blocks)));
  };
  const uint64_t embed = p.units.front().memory_bytes, head = p.units.back().memory_bytes;
  const bool origin_copy = g.ring && (i == g.o_first || i == g.o_last);
  if (origin_copy) {
    const int both = cap(add_sat(embed, head));
    return NodeCaps{both, both, true};
  }
  const uint64_t own = i == g.o_first ? embed : 0;
  return NodeCaps{cap(own), cap(add_sat(own, head)), !g.ring};
}

Expected<Search> solve_uniform(const Profile& p, const SolveOptions& o, const UniformBlocks& ub, Search search,
                               Clock::time_point deadline) {
  const Nodes g(p, o);
  const int n_nodes = g.n_nodes, o_first = g.o_first, o_last = g.o_last, last_unit = g.n_units - 1;
  const int n_blocks = ub.n_blocks;

  // Columns: z (binary), u, l (binary), n (integer), then f (continuous).
  struct Pair {
    int from, to;
    double hop_ms;
  };
  std::vector<Pair> pairs;
  for (int a = 0; a < n_nodes; ++a) {
    for (int b = 0; b < n_nodes; ++b) {
      if (!g.may_follow(a, b)) continue;
      pairs.push_back(Pair{a, b, p.hop_ms(g.device(a), g.device(b), ub.block_out_bytes)});
    }
  }
  const int n_z = static_cast<int>(pairs.size());
  const int col_u = n_z, col_l = col_u + n_nodes, col_n = col_l + n_nodes, col_f = col_n + n_nodes;
  const int n_cols = col_f + n_z, n_int = col_f;

  std::vector<double> col_lb(static_cast<size_t>(n_cols), 0.0), col_ub(static_cast<size_t>(n_cols), 1.0),
      obj(static_cast<size_t>(n_cols), 0.0);
  const double inf = std::numeric_limits<double>::max();
  // The stage costs' parts, per node: compute of its fixed units and the head's way home.
  std::vector<double> fixed_ms(static_cast<size_t>(n_nodes), 0.0), last_ms(static_cast<size_t>(n_nodes), 0.0);
  for (int i = 0; i < n_nodes; ++i) {
    const int d = g.device(i);
    if (i == o_first) fixed_ms[static_cast<size_t>(i)] = p.devices[static_cast<size_t>(d)].unit_ms[0];
    last_ms[static_cast<size_t>(i)] =
        p.devices[static_cast<size_t>(d)].unit_ms[static_cast<size_t>(last_unit)] + p.hop_ms(d, p.origin, p.token_bytes);
  }
  double max_coef = 0.0;
  for (const Pair& pr : pairs) max_coef = std::max(max_coef, pr.hop_ms);
  for (int i = 0; i < n_nodes; ++i) {
    max_coef = std::max({max_coef, last_ms[static_cast<size_t>(i)], ub.block_ms[static_cast<size_t>(g.device(i))]});
  }
  const double scale = max_coef > 0 ? 1.0 / max_coef : 1.0;

  RowSet rows(n_cols);
  auto row = [&](std::initializer_list<std::pair<int, double>> terms, double lb, double ubound) {
    SparseRow r;
    for (const auto& [c, v] : terms) r.insert(c, v);
    rows.add(r, lb, ubound);
  };
  std::vector<SparseRow> out(static_cast<size_t>(n_nodes)), in(out.size()), fout(out.size()), fin(out.size());
  for (int c = 0; c < n_z; ++c) {
    out[static_cast<size_t>(pairs[static_cast<size_t>(c)].from)].insert(c, 1.0);
    in[static_cast<size_t>(pairs[static_cast<size_t>(c)].to)].insert(c, 1.0);
    fout[static_cast<size_t>(pairs[static_cast<size_t>(c)].from)].insert(col_f + c, 1.0);
    fin[static_cast<size_t>(pairs[static_cast<size_t>(c)].to)].insert(col_f + c, 1.0);
    col_ub[static_cast<size_t>(col_f + c)] = n_nodes - 1;
    row({{col_f + c, 1.0}, {c, -(n_nodes - 1.0)}}, -inf, 0.0);  // flow only along the path
    obj[static_cast<size_t>(c)] = pairs[static_cast<size_t>(c)].hop_ms * scale;
  }
  SparseRow sum_l, sum_n;
  for (int i = 0; i < n_nodes; ++i) {
    const int d = g.device(i);
    const int cu = col_u + i, cl = col_l + i, cn = col_n + i;
    const NodeCaps caps = node_caps(p, g, ub, i);
    const int cap_mid = caps.mid, cap_last = caps.last;
    if (i == o_first) col_lb[static_cast<size_t>(cu)] = 1.0;  // the origin always runs unit 0
    if (!caps.may_last || cap_last < 0) col_ub[static_cast<size_t>(cl)] = 0.0;
    if (cap_mid < 0 && cap_last < 0) col_ub[static_cast<size_t>(cu)] = 0.0;  // (the origin: see precheck)
    col_ub[static_cast<size_t>(cn)] = std::max(0, std::max(cap_mid, cap_last));
    row({{cl, 1.0}, {cu, -1.0}}, -inf, 0.0);  // l <= u
    row({{cn, 1.0}, {cu, -static_cast<double>(n_blocks)}}, -inf, 0.0);  // blocks only on used nodes
    if (cap_mid >= 0 && cap_last >= 0) {  // n <= cap_mid + (cap_last - cap_mid) l
      row({{cn, 1.0}, {cl, -static_cast<double>(cap_last - cap_mid)}}, -inf, cap_mid);
    } else if (cap_mid < 0) {  // only as the last stage
      row({{cu, 1.0}, {cl, -1.0}}, -inf, 0.0);
      row({{cn, 1.0}}, -inf, std::max(cap_last, 0));
    } else {
      row({{cn, 1.0}}, -inf, cap_mid);
    }
    // A stage that is neither the origin's first nor the last holds at least one block.
    if (i != o_first) row({{cn, 1.0}, {cu, -1.0}, {cl, 1.0}}, 0.0, inf);
    // Degrees: every used node but the last hands over once; every used node but the origin's first
    // is handed to once.
    SparseRow ov = out[static_cast<size_t>(i)];
    ov.insert(cu, -1.0);
    ov.insert(cl, 1.0);
    rows.add(ov, 0.0, 0.0);
    if (i != o_first) {
      SparseRow iv = in[static_cast<size_t>(i)];
      iv.insert(cu, -1.0);
      rows.add(iv, 0.0, 0.0);
      SparseRow fv = fin[static_cast<size_t>(i)];  // each node reached consumes one unit of flow
      for (size_t k = 0; k < fout[static_cast<size_t>(i)].index.size(); ++k)
        fv.insert(fout[static_cast<size_t>(i)].index[k], -1.0);
      fv.insert(cu, -1.0);
      rows.add(fv, 0.0, 0.0);
    }
    sum_l.insert(cl, 1.0);
    sum_n.insert(cn, 1.0);
    obj[static_cast<size_t>(cn)] = ub.block_ms[static_cast<size_t>(d)] * scale;
    obj[static_cast<size_t>(cl)] = last_ms[static_cast<size_t>(i)] * scale;
  }
  rows.add(sum_l, 1.0, 1.0);
  rows.add(sum_n, n_blocks, n_blocks);
  if (g.ring) {  // one last stage on the origin: its first copy (one stage in all) or its second
    row({{col_l + o_first, 1.0}, {col_u + o_last, 1.0}}, 1.0, 1.0);
    row({{col_n + o_first, 1.0}, {col_n + o_last, 1.0}}, -inf, std::max(node_caps(p, g, ub, o_first).mid, 0));
  }

  OsiClpSolverInterface lp = make_lp(rows, col_lb, col_ub, obj, n_int);
  std::vector<double> start;
  if (!search.plan.empty()) {  // the incumbent as a MIP start: every plan here has this shape
    start.assign(static_cast<size_t>(n_cols), 0.0);
    const std::vector<int> nodes = stage_nodes(o_last, p, search.plan);
    for (size_t s = 0; s < nodes.size(); ++s) {
      const Stage& st = search.plan[s];
      const int i = nodes[s];
      start[static_cast<size_t>(col_u + i)] = 1.0;
      const int first_block = std::max(st.first_unit, 1), last_block = std::min(st.last_unit, last_unit - 1);
      start[static_cast<size_t>(col_n + i)] = std::max(0, last_block - first_block + 1);
      if (s + 1 == nodes.size()) start[static_cast<size_t>(col_l + i)] = 1.0;
      if (s + 1 < nodes.size()) {
        for (int c = 0; c < n_z; ++c) {
          if (pairs[static_cast<size_t>(c)].from == i && pairs[static_cast<size_t>(c)].to == nodes[s + 1]) {
            start[static_cast<size_t>(c)] = 1.0;
            start[static_cast<size_t>(col_f + c)] = static_cast<double>(nodes.size() - 1 - s);
          }
        }
      }
    }
    lp.setIntParam(OsiNameDiscipline, 1);
    for (int c = 0; c < n_cols; ++c) lp.setColName(c, col_name(c));
  }
  const CbcOutcome r = run_cbc(lp, seconds_left(deadline), start);
  if (!r.has_solution) {
    search.proven_infeasible = r.proven_infeasible && search.plan.empty();
    return search;
  }
  auto value = [&](int c) { return r.solution[static_cast<size_t>(c)]; };
  // Walk the path from the origin; blocks follow in path order.
  std::vector<int> order{o_first};
  std::vector<char> seen(static_cast<size_t>(n_nodes), 0);
  seen[static_cast<size_t>(o_first)] = 1;
  for (;;) {
    int next = -1;
    for (int c = 0; c < n_z; ++c) {
      if (pairs[static_cast<size_t>(c)].from == order.back() && value(c) > 0.5) next = pairs[static_cast<size_t>(c)].to;
    }
    if (next < 0 || seen[static_cast<size_t>(next)]) break;
    seen[static_cast<size_t>(next)] = 1;
    order.push_back(next);
  }
  std::vector<Stage> stages;
  int unit = 0;
  for (size_t s = 0; s < order.size(); ++s) {
    const int i = order[s];
    int n = static_cast<int>(std::lround(value(col_n + i)));
    int last = s == 0 ? n : unit + n - 1;  // the origin's first stage also holds unit 0
    if (s + 1 == order.size()) last = last_unit;
    stages.push_back(Stage{g.device(i), unit, last});
    unit = last + 1;
  }
  double objective = 0.0;
  for (int c = 0; c < n_cols; ++c) objective += obj[static_cast<size_t>(c)] * value(c);
  search.solver_objective_ms = objective / scale + fixed_ms[static_cast<size_t>(o_first)];
  stages = polish(p, o, std::move(stages));
  auto cost = evaluate(p, stages, o);
  if (!cost) return make_error(ErrorCode::internal, "the block MILP's plan is not valid: " + cost.error().message);
  if (*cost < search.cost_ms || search.plan.empty()) {
    search.plan = std::move(stages);
    search.cost_ms = *cost;
  }
  search.proven_optimal = r.proven_optimal;
  return search;
}

// Throughput over repeated blocks: the bisection above, each probe a compact feasibility MILP whose
// arcs say "node i holds k blocks and hands over to node j (or, last, sends the token home)" with
// their exact stage cost; only arcs costing <= theta are kept:
//   y[i,k,j] binary;  f[i,j] >= 0 single-commodity flow along the chosen arcs (no detached cycles)
//   one arc per node (the origin's first copy: exactly one); a node is handed to iff it has an arc;
//   one arc ends the plan; the blocks add up to B; ring: the origin's two copies share its memory.
struct BlockArc {
  int node, blocks, next;  // next = -1: the last stage
  double cost_ms;          // exactly evaluate()'s stage cost
};

Expected<Search> solve_uniform_throughput(const Profile& p, const SolveOptions& o, const UniformBlocks& ub,
                                          Search search, Clock::time_point deadline) {
  const Nodes g(p, o);
  const int n_nodes = g.n_nodes, o_first = g.o_first, o_last = g.o_last, last_unit = g.n_units - 1;
  const int n_blocks = ub.n_blocks;
  const int ring_cap = g.ring ? node_caps(p, g, ub, o_first).mid : 0;
  std::vector<BlockArc> all;
  for (int i = 0; i < n_nodes; ++i) {
    const int d = g.device(i);
    const std::vector<double>& ms = p.devices[static_cast<size_t>(d)].unit_ms;
    const NodeCaps caps = node_caps(p, g, ub, i);
    const int cap_mid = caps.mid, cap_last = caps.last;
    const bool may_last = caps.may_last;
    // Compute sums built unit by unit in unit order, as evaluate() adds them, so that the costs are
    // bit-identical to the plans' (the bisection relies on it).
    double compute = i == o_first ? ms[0] : 0.0;
    for (int k = 0; k <= n_blocks; ++k) {
      if (k > 0) compute += ms[1];
      if (k <= cap_mid && (k > 0 || i == o_first)) {
        for (int j = 0; j < n_nodes; ++j) {
          if (!g.may_follow(i, j)) continue;
          all.push_back(BlockArc{i, k, j, compute + p.hop_ms(d, g.device(j), ub.block_out_bytes)});
        }
      }
      if (may_last && k <= cap_last) {
        const double c = compute + ms[static_cast<size_t>(last_unit)];
        all.push_back(BlockArc{i, k, -1, c + p.hop_ms(d, p.origin, p.token_bytes)});
      }
    }
  }
  double first_min = kInf, last_min = kInf, block_min = kInf;
  for (const BlockArc& a : all) {
    if (a.node == o_first) first_min = std::min(first_min, a.cost_ms);
    if (a.next < 0) last_min = std::min(last_min, a.cost_ms);
    if (a.blocks > 0) block_min = std::min(block_min, a.cost_ms);
  }
  const double lower = std::max({first_min, last_min, n_blocks > 0 ? block_min : -kInf});
  if (lower == kInf) {
    search.proven_infeasible = search.plan.empty();
    return search;
  }
  std::vector<double> costs;
  costs.reserve(all.size());
  for (const BlockArc& a : all) costs.push_back(a.cost_ms);

  std::vector<BlockArc> arcs;
  auto probe = [&](double theta, std::vector<Stage>& plan) -> Expected<Feasibility> {
    arcs.clear();
    for (const BlockArc& a : all) {
      if (a.cost_ms <= theta) arcs.push_back(a);
    }
    const int n_y = static_cast<int>(arcs.size());
    // Flow columns: one per (from, to) pair that some arc uses.
    std::vector<int> pair_col(static_cast<size_t>(n_nodes) * n_nodes, -1);
    int n_cols = n_y;
    for (const BlockArc& a : arcs) {
      if (a.next < 0) continue;
      int& c = pair_col[static_cast<size_t>(a.node) * n_nodes + a.next];
      if (c < 0) c = n_cols++;
    }
    std::vector<SparseRow> own(static_cast<size_t>(n_nodes)), into(own.size()), fin(own.size()), fout(own.size());
    std::vector<SparseRow> cap_row(static_cast<size_t>(n_cols - n_y));
    SparseRow ends, blocks, ring_mem;
    for (int c = 0; c < n_y; ++c) {
      const BlockArc& a = arcs[static_cast<size_t>(c)];
      own[static_cast<size_t>(a.node)].insert(c, 1.0);
      if (a.next < 0) {
        ends.insert(c, 1.0);
      } else {
        into[static_cast<size_t>(a.next)].insert(c, 1.0);
        cap_row[static_cast<size_t>(pair_col[static_cast<size_t>(a.node) * n_nodes + a.next] - n_y)].insert(
            c, -(n_nodes - 1.0));
      }
      if (a.blocks > 0) blocks.insert(c, a.blocks);
      if (g.ring && (a.node == o_first || a.node == o_last) && a.blocks > 0) ring_mem.insert(c, a.blocks);
    }
    if (own[static_cast<size_t>(o_first)].getNumElements() == 0 || ends.getNumElements() == 0) {
      return Feasibility::infeasible;
    }
    for (int a = 0; a < n_nodes; ++a) {
      for (int b = 0; b < n_nodes; ++b) {
        const int c = pair_col[static_cast<size_t>(a) * n_nodes + b];
        if (c < 0) continue;
        cap_row[static_cast<size_t>(c - n_y)].insert(c, 1.0);
        fout[static_cast<size_t>(a)].insert(c, -1.0);
        fin[static_cast<size_t>(b)].insert(c, 1.0);
      }
    }
    RowSet rows(n_cols);
    const double inf = std::numeric_limits<double>::max();
    for (int i = 0; i < n_nodes; ++i) {
      const SparseRow& v = own[static_cast<size_t>(i)];
      if (i == o_first) {
        rows.add(v, 1.0, 1.0);
        continue;
      }
      if (v.getNumElements() > 0) rows.add(v, -inf, 1.0);
      SparseRow handed = into[static_cast<size_t>(i)];  // handed to exactly when it has a stage
      for (size_t k = 0; k < v.index.size(); ++k) handed.insert(v.index[k], -1.0);
      if (handed.getNumElements() > 0) rows.add(handed, 0.0, 0.0);
      SparseRow flow = fin[static_cast<size_t>(i)];  // and consumes one unit of flow then
      flow.index.insert(flow.index.end(), fout[static_cast<size_t>(i)].index.begin(),
                        fout[static_cast<size_t>(i)].index.end());
      flow.value.insert(flow.value.end(), fout[static_cast<size_t>(i)].value.begin(),
                        fout[static_cast<size_t>(i)].value.end());
      for (size_t k = 0; k < v.index.size(); ++k) flow.insert(v.index[k], -1.0);
      if (flow.getNumElements() > 0) rows.add(flow, 0.0, 0.0);
    }
    for (const SparseRow& r : cap_row) rows.add(r, -inf, 0.0);
    rows.add(ends, 1.0, 1.0);
    if (n_blocks > 0 && blocks.getNumElements() == 0) return Feasibility::infeasible;
    if (blocks.getNumElements() > 0) rows.add(blocks, n_blocks, n_blocks);
    if (ring_mem.getNumElements() > 0) rows.add(ring_mem, -inf, std::max(ring_cap, 0));
    std::vector<double> col_lb(static_cast<size_t>(n_cols), 0.0), col_ub(static_cast<size_t>(n_cols), 1.0),
        obj(static_cast<size_t>(n_cols), 0.0);
    for (int c = n_y; c < n_cols; ++c) col_ub[static_cast<size_t>(c)] = n_nodes - 1;
    const OsiClpSolverInterface lp = make_lp(rows, col_lb, col_ub, obj, n_y);
    // With CBC's primal heuristics (unlike the interval probes): these models are small, and a
    // feasible probe just below the incumbent took seconds of tree search without them, 0.1 s with.
    const CbcOutcome r = run_cbc(lp, seconds_left(deadline), {}, /*heuristics=*/true);
    if (!r.has_solution) return r.proven_infeasible ? Feasibility::infeasible : Feasibility::unknown;
    // Walk the chosen arcs from the origin.
    plan.clear();
    int node = o_first, unit = 0;
    for (int step = 0; step < n_nodes && node >= 0; ++step) {
      const BlockArc* chosen = nullptr;
      for (int c = 0; c < n_y; ++c) {
        if (arcs[static_cast<size_t>(c)].node == node && r.solution[static_cast<size_t>(c)] > 0.5)
          chosen = &arcs[static_cast<size_t>(c)];
      }
      if (chosen == nullptr) break;
      int last = node == o_first ? chosen->blocks : unit + chosen->blocks - 1;
      if (chosen->next < 0) last = last_unit;
      plan.push_back(Stage{g.device(node), unit, last});
      unit = last + 1;
      node = chosen->next;
    }
    auto cost = evaluate(p, plan, o);
    if (!cost) return make_error(ErrorCode::internal, "the block MILP's plan is not valid: " + cost.error().message);
    return Feasibility::feasible;
  };
  return bisect(p, o, std::move(search), deadline, std::move(costs), lower, probe);
}

}  // namespace

Expected<PlanResult> solve(const Profile& profile, const SolveOptions& options) {
  LL_TRY(validate(profile));
  if (!(options.time_limit_s > 0) || !std::isfinite(options.time_limit_s)) {
    return make_error(ErrorCode::invalid_argument, "the time limit must be a positive number of seconds");
  }
  LL_TRY(precheck_feasible(profile, options));
  const Profile& p = profile;
  const double n_nodes = p.n_devices() + (options.ring ? 1 : 0), n_units = p.n_units();
  const double n_columns = options.objective == Objective::throughput
                               ? n_nodes * n_nodes * n_units * (n_units + 1) / 2
                               : n_nodes * n_units * (n_units + 1) / 2 + n_nodes * n_nodes * n_units;
  UniformBlocks blocks;
  const bool block_model = options.use_block_model && uniform_blocks(p, blocks);
  if (!block_model && n_columns > kMaxColumns) {
    return make_error(ErrorCode::unsupported,
                      "the MILP for " + std::to_string(p.n_units()) + " units over " +
                          std::to_string(p.n_devices()) + " devices is too large (about " +
                          std::to_string(static_cast<long long>(n_columns)) + " variables, at most " +
                          std::to_string(static_cast<long long>(kMaxColumns)) + ")");
  }
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline = start + std::chrono::duration_cast<Clock::duration>(
                                                 std::chrono::duration<double>(options.time_limit_s));

  Search search;
  if (options.warm_start && heuristic_plan(p, options, search.plan, search.cost_ms)) {
    // At most a quarter of the time limit: the MILP needs the rest.
    const Clock::time_point heuristic_deadline =
        start +
        std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(options.time_limit_s / 4));
    // The block model needs only a good incumbent to prune with, and solves in a fraction of the
    // interval models' time: a tenth of the local search is its better share.
    const double budget = block_model ? kLocalSearchBudget / 10 : kLocalSearchBudget;
    OrderSearch(p, options, budget, heuristic_deadline).improve(search.plan, search.cost_ms);
  } else {
    search.plan.clear();
    search.cost_ms = kInf;
  }
  if (block_model) {
    LL_ASSIGN_OR_RETURN(search, options.objective == Objective::latency
                                    ? solve_uniform(p, options, blocks, search, deadline)
                                    : solve_uniform_throughput(p, options, blocks, search, deadline));
  } else {
    LL_ASSIGN_OR_RETURN(search, options.objective == Objective::latency
                                    ? solve_latency(p, options, search, deadline)
                                    : solve_throughput(p, options, search, deadline));
  }
  if (search.plan.empty()) {
    if (search.proven_infeasible) return explain_infeasible(p, options);
    char limit[32];
    std::snprintf(limit, sizeof limit, "%g", options.time_limit_s);
    return make_error(ErrorCode::resource, std::string("no plan found within the time limit of ") + limit +
                                               " s (and none proven impossible); try a longer time limit");
  }
  LL_ASSIGN_OR_RETURN(PlanResult r, describe(p, std::move(search.plan), options));
  r.proven_optimal = search.proven_optimal;
  r.solver_objective_ms = search.solver_objective_ms;
  r.solver_model = block_model ? "blocks" : options.objective == Objective::latency ? "intervals" : "bisection";
  return r;
}

}  // namespace ll::plan
