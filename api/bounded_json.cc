#include "api/bounded_json.h"

#include <fmt/format.h>

namespace shardserve::api {

nlohmann::json parse_bounded_json(std::string_view text, int max_depth) {
  using json = nlohmann::json;
  // The callback sees each array/object start with the depth of its parent; throwing from it
  // stops the parse before the deeper levels are read.
  const json::parser_callback_t bound = [max_depth](int depth, json::parse_event_t event, json&) {
    if ((event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) &&
        depth >= max_depth)
      throw JsonTooDeep(fmt::format(
          "JSON nested more than {} levels deep (the limit max_json_depth is {})", max_depth,
          max_depth));
    return true;
  };
  return json::parse(text.begin(), text.end(), bound, /*allow_exceptions=*/false);
}

}  // namespace shardserve::api
