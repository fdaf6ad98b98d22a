from layerbot.cli.main import main

main()
