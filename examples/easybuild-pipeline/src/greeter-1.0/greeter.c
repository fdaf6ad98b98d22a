/* The program step B installs: its message comes from libgreet (step A). */
#include <stdio.h>
#include <greet.h>

int main(void) {
    printf("greeter says: %s\n", greet_message());
    return 0;
}
