import pytest
from django.core.management import CommandError, call_command

from evalsite.catalog.models import Prompt, PromptSet
from evalsite.catalog.prompt_files import PromptFileError, detect_rendered_text, read_prompt_file
from tests.support import PARTI_PROMPTS


@pytest.mark.django_db
def test_partiprompts_import_gives_1632_prompts_in_12_categories_and_11_challenges():
    call_command("import_prompts", PARTI_PROMPTS, "--name", "parti")
    prompts = Prompt.objects.filter(prompt_set__name="parti")
    assert prompts.count() == 1632
    assert prompts.order_by().values("category").distinct().count() == 12
    assert prompts.order_by().values("challenge").distinct().count() == 11
    writing = prompts.filter(challenge="Writing & Symbols")
    assert writing.count() == 91
    assert all(p.needs_text for p in writing)
    peace = prompts.get(text__contains='the word "PEACE"')
    assert peace.needs_text and peace.rendered_text == "PEACE"
    assert not prompts.get(text="a photo of san francisco's golden gate bridge").needs_text
    assert prompts.get(position=0).text == "bond"


@pytest.mark.django_db
def test_manual_override_of_the_typography_flag_wins():
    call_command("import_prompts", PARTI_PROMPTS, "--name", "parti")
    prompt = Prompt.objects.get(prompt_set__name="parti", position=0)
    assert not prompt.needs_text
    prompt.needs_text_override = True
    prompt.save()
    prompt.refresh_from_db()
    assert prompt.needs_text


def test_detects_double_curly_and_single_quoted_text_but_not_apostrophes():
    assert detect_rendered_text('a sign that says "OPEN"') == (True, "OPEN")
    assert detect_rendered_text("a dog holding a sign saying 'plz conserve'") == (True, "plz conserve")
    assert detect_rendered_text("a cat's tail showing under a couch") == (False, "")
    assert detect_rendered_text("a logo", category="Writing & Symbols") == (True, "")
    assert detect_rendered_text("the word “HELLO” on a wall") == (True, "HELLO")


@pytest.mark.django_db
def test_a_malformed_tsv_reports_line_numbers_and_imports_nothing(tmp_path):
    path = tmp_path / "broken.tsv"
    path.write_text(
        "Prompt\tCategory\tChallenge\tNote\n"
        "a red circle\tAbstract\tBasic\t\n"
        "a blue square\tAbstract\n"
        "\tAbstract\tBasic\t\n"
        "a green triangle\tAbstract\tBasic\t\n"
    )
    with pytest.raises(CommandError) as excinfo:
        call_command("import_prompts", str(path), "--name", "broken")
    message = str(excinfo.value)
    assert "line 3: expected 4 tab-separated fields, found 2" in message
    assert "line 4: empty prompt" in message
    assert "nothing was imported" in message
    assert not PromptSet.objects.filter(name="broken").exists()
    assert Prompt.objects.count() == 0


@pytest.mark.django_db
def test_csv_with_a_prompt_column_imports_quoted_text_and_the_needs_text_column(tmp_path):
    good = tmp_path / "prompts.csv"
    good.write_text(
        'prompt,category,needs_text\n"a cup, on a table",Artifacts,\n'
        '"the word ""HI"" on a card",Writing,\nplain sky,Outdoor,no\n'
    )
    call_command("import_prompts", str(good), "--name", "csv")
    prompts = list(Prompt.objects.filter(prompt_set__name="csv").order_by("position"))
    assert [p.text for p in prompts] == ["a cup, on a table", 'the word "HI" on a card', "plain sky"]
    assert prompts[1].needs_text and prompts[1].rendered_text == "HI"
    assert prompts[2].needs_text_override is False


def test_a_csv_reports_every_broken_row_by_line_number(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,category\nfine,Abstract\ntoo,many,fields\n,Abstract\nok,Art,maybe\n")
    with pytest.raises(PromptFileError) as excinfo:
        read_prompt_file(bad)
    assert [line for line, _ in excinfo.value.errors] == [3, 4, 5]


@pytest.mark.django_db
def test_text_file_has_one_prompt_per_line(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red circle\n\na green square\n")
    call_command("import_prompts", str(path), "--name", "txt")
    assert list(Prompt.objects.filter(prompt_set__name="txt").values_list("text", flat=True)) == [
        "a red circle",
        "a green square",
    ]


def test_a_text_file_line_with_a_tab_is_refused_by_line_number(tmp_path):
    broken = tmp_path / "broken.txt"
    broken.write_text("ok\nnot\tok\n")
    with pytest.raises(PromptFileError) as excinfo:
        read_prompt_file(broken)
    assert excinfo.value.errors[0][0] == 2


@pytest.mark.django_db
@pytest.mark.parametrize(
    "file_name, message", [("x.json", "unknown file type"), ("missing.tsv", "file not found")], ids=["json", "missing"]
)
def test_an_unknown_extension_or_a_missing_file_is_a_clear_error(tmp_path, file_name, message):
    with pytest.raises(CommandError, match=message):
        call_command("import_prompts", str(tmp_path / file_name), "--name", "x")


@pytest.fixture
def imported_once(db, tmp_path):
    """A prompt set "dup" imported from p.txt (one prompt); returns the file."""
    path = tmp_path / "p.txt"
    path.write_text("one\n")
    call_command("import_prompts", str(path), "--name", "dup")
    return path


def test_a_prompt_set_name_that_exists_is_refused(imported_once):
    with pytest.raises(CommandError, match="already exists"):
        call_command("import_prompts", str(imported_once), "--name", "dup")


def test_replace_imports_again_under_a_name_that_exists(imported_once):
    imported_once.write_text("one\ntwo\n")
    call_command("import_prompts", str(imported_once), "--name", "dup", "--replace")
    assert Prompt.objects.filter(prompt_set__name="dup").count() == 2
