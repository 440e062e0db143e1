// Profiles are untrusted input: every malformed one gets a clear error naming the field.
#include "plan/profile.h"

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "plan/plan.h"
#include "plan_test_util.h"

namespace ll::plan {
namespace {

using nlohmann::json;

json good_json() {
  return json::parse(R"({
    "units": [{"name": "embed", "memory_bytes": 1000, "out_bytes": 256},
              {"name": "blk0", "memory_bytes": 2000, "out_bytes": 256},
              {"name": "head", "memory_bytes": 1500, "out_bytes": 4}],
    "devices": [{"name": "phone", "memory_bytes": 3000, "unit_ms": [0.1, 2.0, 1.5]},
                {"name": "laptop", "memory_bytes": 1e4, "unit_ms": [0.05, 0.5, 0.4]}],
    "latency_ms": [[0, 5.0], [5.0, 0]],
    "bandwidth_bytes_per_s": [[0, 1.25e7], [1.25e7, 0]],
    "origin": "phone",
    "token_bytes": 4 })");
}

TEST(Profile, ParsesAGoodOne) {
  auto p = parse_profile(good_json().dump());
  ASSERT_TRUE(p) << p.error().message;
  EXPECT_EQ(p->n_units(), 3);
  EXPECT_EQ(p->n_devices(), 2);
  EXPECT_EQ(p->origin, 0);
  EXPECT_EQ(p->units[1].name, "blk0");
  EXPECT_EQ(p->units[1].memory_bytes, 2000u);
  EXPECT_EQ(p->devices[1].memory_bytes, 10000u);  // 1e4 is a whole number
  EXPECT_DOUBLE_EQ(p->devices[1].unit_ms[2], 0.4);
  EXPECT_DOUBLE_EQ(p->hop_ms(0, 1, 256), 5.0 + 1000.0 * 256 / 1.25e7);
  EXPECT_DOUBLE_EQ(p->hop_ms(1, 1, 256), 0.0);
  EXPECT_EQ(p->find_device("laptop"), 1);
  EXPECT_EQ(p->find_device("tablet"), -1);
}

TEST(Profile, RoundTripsThroughJson) {
  std::mt19937_64 rng(5);
  test::RandomSpec spec;
  const Profile p = test::random_profile(rng, spec);
  auto q = parse_profile(profile_to_json(p));
  ASSERT_TRUE(q) << q.error().message;
  EXPECT_EQ(profile_to_json(*q), profile_to_json(p));
  EXPECT_EQ(q->devices[2].unit_ms, p.devices[2].unit_ms);  // doubles exactly
  EXPECT_EQ(q->origin, p.origin);
}

struct Bad {
  const char* what;
  std::function<void(json&)> mutate;
  const char* message;  // expected substring
};

TEST(Profile, RejectsMalformedOnesNamingTheField) {
  const Bad cases[] = {
      {"not an object", [](json& j) { j = json::array(); }, "the top level must be a JSON object"},
      {"no units", [](json& j) { j.erase("units"); }, "units is missing"},
      {"units not array", [](json& j) { j["units"] = 3; }, "units must be an array"},
      {"units empty", [](json& j) { j["units"] = json::array(); }, "units is empty"},
      {"unit not object", [](json& j) { j["units"][1] = "blk"; }, "units[1] must be an object"},
      {"unit without name", [](json& j) { j["units"][2].erase("name"); }, "units[2].name is missing"},
      {"unit name number", [](json& j) { j["units"][2]["name"] = 7; }, "units[2].name must be a string"},
      {"unit name empty", [](json& j) { j["units"][0]["name"] = ""; }, "units[0].name is empty"},
      {"unit names twice", [](json& j) { j["units"][2]["name"] = "embed"; },
       "units[2].name 'embed' is used twice"},
      {"negative memory", [](json& j) { j["units"][1]["memory_bytes"] = -5; },
       "units[1].memory_bytes is negative"},
      {"fractional memory", [](json& j) { j["units"][1]["memory_bytes"] = 10.5; },
       "units[1].memory_bytes must be a whole number of bytes"},
      {"huge memory", [](json& j) { j["units"][1]["memory_bytes"] = 1e300; },
       "units[1].memory_bytes is too large"},
      {"memory string", [](json& j) { j["units"][1]["memory_bytes"] = "1GB"; },
       "units[1].memory_bytes must be a number of bytes"},
      {"negative out", [](json& j) { j["units"][0]["out_bytes"] = -1.0; }, "units[0].out_bytes is negative"},
      {"no out", [](json& j) { j["units"][0].erase("out_bytes"); }, "units[0].out_bytes is missing"},
      {"no devices", [](json& j) { j.erase("devices"); }, "devices is missing"},
      {"devices empty", [](json& j) { j["devices"] = json::array(); }, "devices is empty"},
      {"unit_ms short", [](json& j) { j["devices"][1]["unit_ms"] = json::parse("[1.0, 2.0]"); },
       "devices[1].unit_ms has 2 entries, expected 3"},
      {"unit_ms not array", [](json& j) { j["devices"][0]["unit_ms"] = 2.0; },
       "devices[0].unit_ms must be an array of numbers"},
      {"unit_ms negative", [](json& j) { j["devices"][0]["unit_ms"][2] = -0.5; },
       "devices[0].unit_ms[2] is negative"},
      {"unit_ms null", [](json& j) { j["devices"][0]["unit_ms"][1] = nullptr; },
       "devices[0].unit_ms[1] must be a number"},
      {"device names twice", [](json& j) { j["devices"][1]["name"] = "phone"; },
       "devices[1].name 'phone' is used twice"},
      {"device memory missing", [](json& j) { j["devices"][1].erase("memory_bytes"); },
       "devices[1].memory_bytes is missing"},
      {"latency rows", [](json& j) { j["latency_ms"] = json::parse("[[0, 5.0]]"); },
       "latency_ms has 1 rows, expected 2"},
      {"latency cols", [](json& j) { j["latency_ms"][1] = json::parse("[5.0]"); },
       "latency_ms[1] has 1 entries, expected 2"},
      {"latency negative", [](json& j) { j["latency_ms"][0][1] = -1; }, "latency_ms[0][1] is negative"},
      {"latency missing", [](json& j) { j.erase("latency_ms"); }, "latency_ms is missing"},
      {"bandwidth zero", [](json& j) { j["bandwidth_bytes_per_s"][1][0] = 0; },
       "bandwidth_bytes_per_s[1][0] must be > 0"},
      {"bandwidth tiny", [](json& j) { j["bandwidth_bytes_per_s"][1][0] = 1e-320; },
       "(bandwidth_bytes_per_s[1][0] is too small)"},
      {"bandwidth not matrix", [](json& j) { j["bandwidth_bytes_per_s"] = "fast"; },
       "bandwidth_bytes_per_s must be an array of 2 rows"},
      {"origin unknown", [](json& j) { j["origin"] = "tablet"; },
       "origin 'tablet' is not one of the devices"},
      {"origin number", [](json& j) { j["origin"] = 0; }, "origin must be a string"},
      {"token missing", [](json& j) { j.erase("token_bytes"); }, "token_bytes is missing"},
      {"token negative", [](json& j) { j["token_bytes"] = -4; }, "token_bytes is negative"},
  };
  for (const Bad& b : cases) {
    json j = good_json();
    b.mutate(j);
    auto p = parse_profile(j.dump());
    ASSERT_FALSE(p) << b.what;
    EXPECT_EQ(p.error().code, ErrorCode::parse) << b.what;
    EXPECT_NE(p.error().message.find(b.message), std::string::npos)
        << b.what << ": got \"" << p.error().message << "\", expected to contain \"" << b.message << "\"";
  }
}

TEST(Profile, RejectsBrokenJsonAndNonFiniteNumbers) {
  for (const char* text : {"", "{", "{\"units\": [", "nul", "{\"units\": 1e999}", "[1, 2,]"}) {
    auto p = parse_profile(text);
    ASSERT_FALSE(p) << text;
    EXPECT_EQ(p.error().code, ErrorCode::parse) << text;
  }
  EXPECT_NE(parse_profile("{").error().message.find("not valid JSON"), std::string::npos);
}

TEST(Profile, ValidateCatchesInCodeMistakes) {
  Profile p = test::blank_profile(3, 2);
  EXPECT_TRUE(validate(p));
  p.devices[1].unit_ms.push_back(1.0);
  EXPECT_NE(validate(p).error().message.find("devices[1].unit_ms has 4 entries, expected 3"),
            std::string::npos);
  p = test::blank_profile(3, 2);
  p.origin = 2;
  EXPECT_FALSE(validate(p));
  p = test::blank_profile(3, 2);
  p.devices[0].unit_ms[1] = std::numeric_limits<double>::quiet_NaN();
  EXPECT_NE(validate(p).error().message.find("devices[0].unit_ms[1] is not a finite number"),
            std::string::npos);
  p = test::blank_profile(3, 2);
  p.latency_ms[1][0] = std::numeric_limits<double>::infinity();
  EXPECT_NE(validate(p).error().message.find("latency_ms[1][0] is not a finite number"), std::string::npos);
}

TEST(Profile, SurvivesMutatedFiles) {
  // Hostile bytes: truncations, flipped characters, spliced numbers. Parsing must fail cleanly or
  // give a profile that validates, and such a profile must plan without incident.
  const std::string good = good_json().dump();
  std::mt19937_64 rng(17);
  const char pieces[] = "{}[],:\"0123456789.eE-+ nulltruefalse";
  int parsed = 0;
  for (int n = 0; n < 3000; ++n) {
    std::string text = good;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits && !text.empty(); ++e) {
      const size_t at = rng() % text.size();
      switch (rng() % 4) {
        case 0:
          text.resize(at);
          break;
        case 1:
          text[at] = pieces[rng() % (sizeof pieces - 1)];
          break;
        case 2:
          text.insert(at, 1, pieces[rng() % (sizeof pieces - 1)]);
          break;
        default:
          text.erase(at, 1 + rng() % 8);
          break;
      }
    }
    auto p = parse_profile(text);
    if (!p) {
      EXPECT_EQ(p.error().code, ErrorCode::parse);
      EXPECT_FALSE(p.error().message.empty());
      continue;
    }
    ++parsed;
    ASSERT_TRUE(validate(*p));
    SolveOptions o;
    o.time_limit_s = 5;
    auto r = solve(*p, o);
    if (r) {
      EXPECT_TRUE(evaluate(*p, r->stages, o));
    } else {
      EXPECT_EQ(r.error().code, ErrorCode::resource) << r.error().message;
    }
  }
  EXPECT_GT(parsed, 20);  // some mutations keep the file valid (e.g. a changed digit)
}

TEST(Profile, FormatsBytes) {
  EXPECT_EQ(format_bytes(812), "812 bytes");
  EXPECT_EQ(format_bytes(10240), "10.0 KiB");
  EXPECT_EQ(format_bytes(5ull << 20), "5.0 MiB");
  EXPECT_EQ(format_bytes(3ull << 30), "3.00 GiB");
  EXPECT_EQ(format_bytes_exact(5ull << 20), "5.0 MiB (5242880 bytes)");
  EXPECT_EQ(format_bytes_exact(999), "999 bytes");
}

}  // namespace
}  // namespace ll::plan

namespace ll::plan {
namespace {

TEST(Profile, ADeviceThatJoinsIsReachedThroughTheOriginsNetwork) {
  auto p = parse_profile(good_json().dump());
  ASSERT_TRUE(p) << p.error().message;
  ASSERT_TRUE(add_device(*p, DeviceProfile{"tablet", 8000, {0.02, 0.3, 0.2}}, 2.0, 5e6));
  ASSERT_EQ(p->n_devices(), 3);
  EXPECT_EQ(p->devices[2].name, "tablet");
  // To the origin (phone): its own link. To the laptop: both links' latency, the slower rate.
  EXPECT_DOUBLE_EQ(p->latency_ms[0][2], 2.0);
  EXPECT_DOUBLE_EQ(p->latency_ms[2][0], 2.0);
  EXPECT_DOUBLE_EQ(p->bandwidth_bytes_per_s[2][0], 5e6);
  EXPECT_DOUBLE_EQ(p->latency_ms[1][2], 7.0);
  EXPECT_DOUBLE_EQ(p->latency_ms[2][1], 7.0);
  EXPECT_DOUBLE_EQ(p->bandwidth_bytes_per_s[1][2], 5e6);
  EXPECT_TRUE(validate(*p));
  // The plan may now use it: the tablet is the fastest device for the block.
  SolveOptions so;
  so.objective = Objective::throughput;
  auto solved = solve(*p, so);
  ASSERT_TRUE(solved) << solved.error().message;
  bool uses_tablet = false;
  for (const auto& st : solved->stages) uses_tablet = uses_tablet || st.device == 2;
  EXPECT_TRUE(uses_tablet);
  // Refused, and the profile left as it was: a taken name, the wrong number of unit timings, a
  // link that is not a number.
  const Profile before = *p;
  EXPECT_FALSE(add_device(*p, DeviceProfile{"laptop", 1000, {0.1, 0.1, 0.1}}, 1.0, 1e6));
  EXPECT_FALSE(add_device(*p, DeviceProfile{"watch", 1000, {0.1, 0.1}}, 1.0, 1e6));
  EXPECT_FALSE(add_device(*p, DeviceProfile{"watch", 1000, {0.1, 0.1, 0.1}}, std::nan(""), 1e6));
  EXPECT_FALSE(add_device(*p, DeviceProfile{"watch", 1000, {0.1, 0.1, 0.1}}, 1.0, 0.0));
  EXPECT_EQ(p->n_devices(), before.n_devices());
  EXPECT_EQ(p->latency_ms, before.latency_ms);
}

}  // namespace
}  // namespace ll::plan
