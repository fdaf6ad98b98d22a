/* The package the easyconfig builds. */
#include <stdio.h>

int main(void) {
    printf("hello from an EasyBuild-installed module\n");
    return 0;
}
