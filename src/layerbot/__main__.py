from layerbot.cli import main

main()
