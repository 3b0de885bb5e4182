// The client tests' EventSystem: an embedded broker (a real broker on a thread of the test process).
#pragma once

#include "rvoip/events.hpp"

#include <doctest/doctest.h>

namespace rvoip::events::test {

inline EventSystem embedded(const char* client_name) {
    auto bus = EventSystemBuilder().embedded().client_name(client_name).build();
    REQUIRE_MESSAGE(bus.has_value(), bus.error().what());
    return std::move(*bus);
}

}  // namespace rvoip::events::test
