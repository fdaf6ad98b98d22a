#include "greet.h"

const char *greet_message(void) {
    return "greetings from libgreet 1.0";
}
