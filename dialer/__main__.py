from dialer.cli import app

app(prog_name="dialer")
