from vrconvert.cli.main import main

main()
