from fnacli.cli.app import main

main()
