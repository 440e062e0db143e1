// lingua keygen: a CURVE key pair for `lingua worker --key` / `lingua run --key`.
#include <cstdio>

#include "apps/commands.h"
#include "net/security.h"

namespace ll::apps {

Runner add_keygen_command(CLI::App& app) {
  auto out = std::make_shared<std::string>();
  app.add_option("-o,--output", *out, "Write NAME.key (the key pair, mode 0600) and NAME.pub (the public key)")
      ->required();
  app.footer(
      "Give a worker's .pub to the origin (the device's public_key in the cluster file) and the origin's .pub\n"
      "to each worker (--authorized-keys FILE or --allow=KEY). Keep .key files secret. Never overwrites a key.");
  return [out]() -> int {
    auto keys = net::generate_curve_keypair();
    if (!keys) return report_error(keys.error());
    if (auto ok = net::write_key_files(*out, *keys); !ok) return report_error(ok.error());
    std::fprintf(stderr, "lingua keygen: wrote %s.key (secret, mode 0600) and %s.pub\n", out->c_str(), out->c_str());
    std::printf("%s\n", keys->public_key.c_str());
    return 0;
  };
}

}  // namespace ll::apps
