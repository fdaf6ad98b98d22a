/* The program step C installs: it needs nothing, so its step runs beside A's. */
#include <stdio.h>

int main(void) {
    printf("farewell from an independent step\n");
    return 0;
}
